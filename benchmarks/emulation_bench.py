"""Emulation cost per model: import, export and lowering times; the unsplit model's fps on one core; each
segment of a split instance alone; and that instance as a pipeline of real segment processes behind a gateway
(`elasticdf emulate`'s machinery, on loopback).

A pipeline of k segments can beat the unsplit model by up to k x on k free cores (each segment is one stage);
on this 2-core machine the gateway and the JSON encoding of frames share the cores with the segments, so the
pipeline column is what a user of `elasticdf emulate` sees, not a hardware prediction.

Run: .venv/bin/python benchmarks/emulation_bench.py [--frames 8]   (writes benchmarks/results/emulation.md)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.emulate_command import EmulatedInstance, random_frames, unsplit_outputs
from elasticdf_partitioner.emulation import lower_model
from elasticdf_partitioner.finn_io import export_finn, import_onnx
from elasticdf_partitioner.modelio import runnable_model
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.zoo import load_model
from elasticdf_segment import split

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "emulation.md"
CASES = (("cnv", "2xU280.yaml"), ("mobilenetv1", "2xU280.yaml"), ("resnet50", "2xU280.yaml"))


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def fps_alone(model: onnx.ModelProto, inputs: list) -> float:
    sess = session(model)
    name = sess.get_inputs()[0].name
    seconds = [timed(lambda x=x: sess.run(None, {name: x}))[1] for x in inputs]
    return 1 / statistics.median(seconds)


def segment_inputs(parts: list[onnx.ModelProto], frames: list) -> list[list]:
    """What each segment receives for each frame (the previous segments' outputs)."""
    per_segment, tensors = [], list(frames)
    for part in parts:
        per_segment.append(tensors)
        sess = session(part)
        name = sess.get_inputs()[0].name
        tensors = [sess.run(None, {name: t})[0] for t in tensors]
    return per_segment


def measure(model_name: str, cluster_file: str, frames_n: int, workdir: Path) -> list[str]:
    graph = load_model(model_name)
    finn, export_s = timed(lambda: export_finn(graph, seed=0))
    path = workdir / f"{model_name}.onnx"
    onnx.save(finn, str(path))
    _, import_s = timed(lambda: import_onnx(path))
    _, lower_s = timed(lambda: lower_model(finn))
    lowered = runnable_model(str(path))
    frames = random_frames(lowered, frames_n, seed=1)
    unsplit = fps_alone(lowered, frames)
    plan = solve(graph, load_cluster(ROOT / "examples" / "clusters" / cluster_file, load_catalog()))
    index = max(range(len(plan.instances)), key=lambda i: len(plan.instances[i].segments))
    instance = plan.instances[index]
    parts = split.split(lowered, [s.layer_range for s in instance.segments])
    alone = [fps_alone(part, inputs) for part, inputs in zip(parts, segment_inputs(parts, frames))]
    lowered_path = workdir / f"{model_name}-lowered.onnx"
    lowered_path.write_bytes(lowered.SerializeToString())
    with EmulatedInstance(plan, index, lowered_path, workdir / f"{model_name}-instance") as running:
        result = running.push(frames, unsplit_outputs(lowered, frames), 4, lowered.graph.input[0].name)
    return [model_name, cluster_file.removesuffix(".yaml"), f"{import_s:.2f}", f"{export_s:.2f}", f"{lower_s:.2f}",
            f"{unsplit:.1f}", str(len(parts)), " / ".join(f"{f:.1f}" for f in alone), f"{result.fps:.1f}",
            f"{result.fps / min(alone):.2f}", "identical" if not result.mismatches else f"{result.mismatches} differ"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    header = ["model", "cluster", "import (s)", "export (s)", "lower (s)", "unsplit fps (1 core)", "segments",
              "each segment alone (fps)", "pipeline fps", "pipeline / slowest segment", "answers"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(model, cluster, args.frames, Path(tmp)) for model, cluster in CASES]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = (f"# Emulation\n\n`.venv/bin/python benchmarks/emulation_bench.py --frames {args.frames}` on "
            f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end); onnxruntime CPU, one "
            "intra-op thread per session, zoo seed 0. The instance with the most segments of the plan on the "
            "cluster is emulated; the pipeline runs as real segment and gateway processes on loopback with JSON "
            "requests, 4 in flight.\n\n" + "\n".join(lines) + "\n")
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
