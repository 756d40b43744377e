"""QONNX import: time to turn a Brevitas export into FINN dataflow ONNX, its layers, and planning it on a U250.

Models: the committed Brevitas exports (tests/data/qonnx/*.onnx) and any given with --model PATH[:DATATYPE]
(DATATYPE: the declared input type for models without an input quantizer, e.g. MobileNet's UINT8), such as
the bigger exports of tests/data/qonnx/export_brevitas.py written to a scratch directory with --all.
Import time is the median of --reps runs; planning uses examples/clusters/1xU250.yaml with at most
--max-instances instances (default 8): tiny networks like TFC would otherwise be replicated hundreds of times,
and that search, not the import, would dominate.

Run: .venv/bin/python benchmarks/qonnx_import_bench.py [--model /tmp/export/cnv_w1a1.onnx ...]
     (writes benchmarks/results/qonnx_import.md)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path

import onnx
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.finn_io import import_onnx
from elasticdf_partitioner.qonnx_import import import_qonnx
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.solver.pack import PackSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "qonnx_import.md"
CLUSTER = ROOT / "examples" / "clusters" / "1xU250.yaml"


def measure(path: Path, input_datatype: str | None, reps: int, max_instances: int) -> dict:
    model = onnx.load(path)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        dataflow = import_qonnx(model, input_datatype)
        times.append(time.perf_counter() - start)
    graph = import_onnx(dataflow, name=path.stem)
    start = time.perf_counter()
    plan = solve(graph, load_cluster(CLUSTER), settings=PackSettings(max_instances=max_instances))
    ops = Counter(n.op_type.removesuffix("_hls") for n in dataflow.graph.node)
    return {"model": path.stem, "qonnx_nodes": len(model.graph.node), "import_s": statistics.median(times),
            "layers": len(graph.layers), "ops": ", ".join(f"{op} {n}" for op, n in sorted(ops.items())),
            "plan_s": time.perf_counter() - start, "instances": len(plan.instances), "fps": plan.total_fps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="PATH[:INPUT_DATATYPE]")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-instances", type=int, default=8)
    args = parser.parse_args()
    models = [(p, None) for p in sorted((ROOT / "tests" / "data" / "qonnx").glob("*.onnx"))]
    for spec in args.model:
        path, _, datatype = spec.partition(":")
        models.append((Path(path), datatype or None))
    rows = [measure(path, datatype, args.reps, args.max_instances) for path, datatype in models]
    lines = ["# QONNX import (Brevitas exports, seeded random weights)", "",
             f"Planning on 1xU250 with at most {args.max_instances} instances.", "",
             "| model | QONNX nodes | import s | FINN layers | FINN ops | plan s (1xU250) | instances | fps |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['qonnx_nodes']} | {r['import_s']:.2f} | {r['layers']} | {r['ops']} | "
              f"{r['plan_s']:.1f} | {r['instances']} | {r['fps']:.0f} |" for r in rows]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
