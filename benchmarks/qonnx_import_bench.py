"""QONNX import: time to turn a Brevitas export into FINN dataflow ONNX, its layers, and planning it on a U250
and on two U280s.

Models: the committed Brevitas exports (tests/data/qonnx/*.onnx), the quantized models the qonnx package ships
(qonnx/data/onnx: ESPCN super-resolution with nearest-neighbour resize and with a sub-pixel convolution, whose
float input is declared UINT8 as FINN's build would annotate it, and FINN's channels-last eltwise test case), and
any given with --model PATH[:DATATYPE] (DATATYPE: the declared input type for models without an input quantizer,
e.g. MobileNet's UINT8), such as the bigger exports of tests/data/qonnx/export_brevitas.py written to a scratch
directory with --all.
Import time is the median of --reps runs; planning uses examples/clusters/1xU250.yaml and 2xU280.yaml with at
most --max-instances instances (default 8): tiny networks like TFC would otherwise be replicated hundreds of
times, and that search, not the import, would dominate.

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
import qonnx
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.finn_io import import_onnx
from elasticdf_partitioner.qonnx_import import import_qonnx
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.solver.pack import PackSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "qonnx_import.md"
CLUSTERS = {"1xU250": ROOT / "examples" / "clusters" / "1xU250.yaml",
            "2xU280": ROOT / "examples" / "clusters" / "2xU280.yaml"}
QONNX_DATA = Path(qonnx.__file__).parent / "data" / "onnx"
# name -> (path under qonnx/data/onnx, declared input datatype)
QONNX_SHIPPED = {"espcn_nn_resize": ("bsd300x3-espcn/nn_resize/quant_model.onnx", None),
                 "espcn_subpixel": ("bsd300x3-espcn/subpixel/quant_model.onnx", "UINT8"),
                 "eltwise_chanlast": ("eltwise_chanlast_testcase.onnx", None)}


def measure(name: str, path: Path, input_datatype: str | None, reps: int, max_instances: int) -> dict:
    model = onnx.load(path)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        dataflow = import_qonnx(model, input_datatype)
        times.append(time.perf_counter() - start)
    graph = import_onnx(dataflow, name=name)
    ops = Counter(n.op_type.removesuffix("_hls") for n in dataflow.graph.node)
    row = {"model": name, "qonnx_nodes": len(model.graph.node), "import_s": statistics.median(times),
           "layers": len(graph.layers), "ops": ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))}
    for cluster, cluster_path in CLUSTERS.items():
        start = time.perf_counter()
        plan = solve(graph, load_cluster(cluster_path), settings=PackSettings(max_instances=max_instances))
        row[cluster] = f"{time.perf_counter() - start:.1f} s, {len(plan.instances)} x, {plan.total_fps:,.0f} fps"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="PATH[:INPUT_DATATYPE]")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-instances", type=int, default=8)
    args = parser.parse_args()
    models = [(p.stem, p, None) for p in sorted((ROOT / "tests" / "data" / "qonnx").glob("*.onnx"))]
    models += [(name, QONNX_DATA / path, datatype) for name, (path, datatype) in QONNX_SHIPPED.items()]
    for spec in args.model:
        path, _, datatype = spec.partition(":")
        models.append((Path(path).stem, Path(path), datatype or None))
    rows = [measure(name, path, datatype, args.reps, args.max_instances) for name, path, datatype in models]
    lines = ["# QONNX import (Brevitas exports with seeded random weights; the qonnx package's trained models)", "",
             f"Planning with at most {args.max_instances} instances: plan time, instances, total fps. Inputs a "
             "conv reads unquantized are declared: "
             + ", ".join(f"{name} {datatype}" for name, _, datatype in models if datatype) + ".", "",
             "| model | QONNX nodes | import s | FINN layers | FINN ops | plan on 1xU250 | plan on 2xU280 |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['qonnx_nodes']} | {r['import_s']:.2f} | {r['layers']} | {r['ops']} | "
              f"{r['1xU250']} | {r['2xU280']} |" for r in rows]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
