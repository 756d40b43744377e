"""`python -m elasticdf_gateway --model NAME --wiring DIR_OR_FILE...`: serve KServe v2 REST for the instances
whose SegmentWiring files it is given (the operator's instance ConfigMaps, mounted)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from elasticdf_partitioner.wiring import SegmentWiring

from .pipeline import Pipeline
from .server import make_server

GATEWAY_PORT = 8000  # builders.GATEWAY_PORT: the last segments send here too


def load_wirings(paths: list[str]) -> list[SegmentWiring]:
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(path.rglob("segment-*.json")) if path.is_dir() else [path]
    return [SegmentWiring.model_validate_json(f.read_text()) for f in files]


def model_metadata(name: str, wirings: list[SegmentWiring]) -> dict:
    """Input/output names and shapes from the model ONNX when the gateway can read it (else names only)."""
    meta = {"name": name, "platform": "elasticdf", "versions": ["1"], "inputs": [], "outputs": []}
    uri = next((w.artifacts.onnx for w in wirings if w.artifacts.onnx), None)
    if uri:
        try:
            from elasticdf_segment.split import load

            graph = load(uri).graph
            for key, values in (("inputs", graph.input), ("outputs", graph.output)):
                meta[key] = [{"name": v.name, "datatype": "FP32",
                              "shape": [d.dim_value or -1 for d in v.type.tensor_type.shape.dim]} for v in values]
        except (OSError, ValueError) as exc:
            logging.getLogger("elasticdf.gateway").warning("model metadata unavailable: %s", exc)
    return meta


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="elasticdf-gateway", description=__doc__)
    p.add_argument("--model", default=os.environ.get("ELASTICDF_MODEL"), help="model name in /v2/models/{name}")
    p.add_argument("--wiring", nargs="+", default=(os.environ.get("ELASTICDF_WIRING_DIR") or "").split() or None,
                   help="SegmentWiring JSON files or directories of segment-*.json")
    p.add_argument("--port", type=int, default=GATEWAY_PORT)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--segment-health-port", type=int, default=8080)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request fails with 504")
    args = p.parse_args(argv)
    if not args.wiring:
        print("elasticdf-gateway: no wiring (--wiring or env ELASTICDF_WIRING_DIR)", file=sys.stderr)
        return 2
    wirings = load_wirings(args.wiring)
    model = args.model or (wirings[0].model if wirings else "model")
    pipeline = Pipeline(wirings, args.segment_health_port, args.timeout)
    server = make_server(args.host, args.port, model, pipeline, model_metadata(model, wirings))
    pipeline.start()
    logging.getLogger("elasticdf.gateway").info("serving %s on :%d for %d instances", model, args.port,
                                                len(pipeline.instances))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
