"""Card builds from a plan: how long bundling and the emulation builder take per build, and how big the files are.

For each (model, cluster) the plan is solved once (not timed here: benchmarks/solver_bench.py), then every
distinct card build is bundled (`bundle.write_bundle`, the model exported once as FINN dataflow ONNX) and built
by the emulation builder (`emulation_build.run_emulation_build`: lowering the whole model, cutting each hosted
range, the cost model's resources). Wall-clock seconds on this machine; sizes are the files written.

Run: .venv/bin/python benchmarks/builds_bench.py   (writes benchmarks/results/builds.md)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from elasticdf_contract.builds import build_tag
from elasticdf_partitioner.builds import card_records, hosted_ranges
from elasticdf_partitioner.bundle import model_dataflow, write_bundle
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.emulation_build import run_emulation_build
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "builds.md"
CASES = [("cnv", "1xU250.yaml"), ("mobilenetv1", "2xU280.yaml"), ("resnet50", "2xU280.yaml")]


def size_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def case_rows(model: str, cluster: str, work: Path) -> list[str]:
    plan = solve(load_model(model), load_cluster(ROOT / "examples" / "clusters" / cluster, load_catalog()),
                 "throughput", None)
    records = {r.digest: r for r in card_records(f"zoo:{model}", plan.instances).values()}
    started = time.monotonic()
    dataflow = model_dataflow(model)
    export_s = time.monotonic() - started
    rows = []
    for record in records.values():
        bundle_dir, out_dir = work / build_tag(record.digest), work / f"{build_tag(record.digest)}-out"
        started = time.monotonic()
        write_bundle(record, model, bundle_dir, dataflow=dataflow)
        bundle_s = time.monotonic() - started
        started = time.monotonic()
        report = run_emulation_build(bundle_dir, out_dir)
        build_s = time.monotonic() - started
        rows.append(f"| {model} | {cluster.removesuffix('.yaml')} | {record.digest[7:19]} | {record.card_type} | "
                    f"{hosted_ranges(record)} | {export_s:.2f} | {bundle_s:.2f} | {size_mb(bundle_dir):.1f} | "
                    f"{build_s:.2f} | {size_mb(out_dir):.1f} | {report.resources['LUT']:,.0f} |")
    return rows


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, cluster in CASES:
            rows += case_rows(model, cluster, Path(tmp) / model)
    load = os.getloadavg()[0]
    text = (
        "# Card builds\n\n"
        f"`.venv/bin/python benchmarks/builds_bench.py` on {os.cpu_count()} cores (load average {load:.1f} at the "
        "end), zoo seed 0. Per distinct card build of the throughput plan: the model's FINN dataflow export (once "
        "per model), writing the bundle, the emulation build (lower the whole model, cut each hosted range, cost "
        "model resources), and the sizes of the bundle and of the artifact.\n\n"
        "| model | cluster | build | card | hosted ranges | export (s) | bundle (s) | bundle (MB) "
        "| emulation build (s) | artifact (MB) | LUT (cost model) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
