"""`python -m elasticdf_gateway --model NAME --wiring DIR_OR_FILE...`: serve KServe v2 REST for the instances
whose SegmentWiring files it is given (the operator's gateway wiring ConfigMap, mounted).

The wiring is re-read when its content changes (polled every --reload-seconds): the kubelet updates a mounted
ConfigMap in place when the operator adds or removes instances, so the gateway follows without a restart.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from elasticdf_contract.wiring import SegmentWiring

from .pipeline import Pipeline
from .server import make_server

GATEWAY_PORT = 8000  # builders.GATEWAY_PORT: the last segments send here too


log = logging.getLogger("elasticdf.gateway")


def wiring_files(paths: list[str]) -> list[Path]:
    """`*segment-*.json` under the directories (the operator's `instance-<i>-segment-<s>.json`, a chart's
    `instance-<i>/segment-<s>.json`), and the files given. Skips the kubelet's `..data`/`..<timestamp>`
    directories of a mounted ConfigMap, which hold the same files again."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        files += sorted(f for f in path.rglob("*segment-*.json")
                        if not any(part.startswith("..") for part in f.relative_to(path).parts))
    return files


def load_wirings(paths: list[str]) -> list[SegmentWiring]:
    return [SegmentWiring.model_validate_json(f.read_text()) for f in wiring_files(paths)]


def digest(paths: list[str]) -> str:
    """Hash of the wiring files' names and contents (what a reload would read)."""
    h = hashlib.sha256()
    for f in wiring_files(paths):
        try:
            h.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:  # removed while we looked: the next poll sees the new state
            h.update(str(f).encode() + b"\0missing\0")
    return h.hexdigest()


class WiringWatcher:
    """Polls the wiring every `interval` s and calls `on_change(wirings)` when the content hash changes.

    A change that does not parse (a half-written file outside a ConfigMap mount) keeps the old wiring and
    is retried on the next poll."""

    def __init__(self, paths: list[str], on_change: Callable[[list[SegmentWiring]], None], interval: float = 1.0):
        self.paths, self.on_change, self.interval = paths, on_change, interval
        self.seen = digest(paths)

    def poll(self) -> bool:
        now = digest(self.paths)
        if now == self.seen:
            return False
        try:
            wirings = load_wirings(self.paths)
        except (OSError, ValueError) as exc:
            log.warning("wiring changed but does not load (keeping the previous one): %s", exc)
            return False
        self.on_change(wirings)
        self.seen = now
        return True

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.poll()
            except Exception:  # noqa: BLE001 (never let the watcher die)
                log.exception("wiring reload failed")

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="wiring-reload", daemon=True)
        thread.start()
        return thread


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


def reload(pipeline: Pipeline, metadata: dict, model: str, wirings: list[SegmentWiring]) -> None:
    added, removed = pipeline.update(wirings)
    if not metadata.get("inputs") and wirings:  # started with no instances (scaled to zero)
        metadata.update(model_metadata(model, wirings))
    log.info("wiring reloaded: %d instance(s); added %s, removed %s", len(pipeline.instances), added or "none",
             removed or "none")


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
    p.add_argument("--reload-seconds", type=float, default=1.0,
                   help="poll the wiring for changes this often (0: read it once at start)")
    args = p.parse_args(argv)
    if not args.wiring:
        print("elasticdf-gateway: no wiring (--wiring or env ELASTICDF_WIRING_DIR)", file=sys.stderr)
        return 2
    wirings = load_wirings(args.wiring)
    model = args.model or (wirings[0].model if wirings else "model")
    pipeline = Pipeline(wirings, args.segment_health_port, args.timeout)
    metadata = model_metadata(model, wirings)
    server = make_server(args.host, args.port, model, pipeline, metadata)
    pipeline.start()
    if args.reload_seconds > 0:
        WiringWatcher(args.wiring, lambda ws: reload(pipeline, metadata, model, ws), args.reload_seconds).start()
    log.info("serving %s on :%d for %d instances", model, args.port, len(pipeline.instances))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
