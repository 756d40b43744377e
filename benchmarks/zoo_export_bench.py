"""Zoo export and emulation cost: per zoo model, the time to export it as a FINN dataflow ONNX with seeded
parameters (`export_finn`), to lower that to standard ONNX (`lower_model`), to open an onnxruntime session on
it, and to run one frame (1 intra-op thread), plus the model sizes.

Run: .venv/bin/python benchmarks/zoo_export_bench.py [--frames 5]   (writes benchmarks/results/zoo_export.md)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from elasticdf_partitioner.emulation import lower_model
from elasticdf_partitioner.finn_io import export_finn
from elasticdf_partitioner.zoo import load_model, zoo_names

OUT = Path(__file__).parent / "results" / "zoo_export.md"


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def measure(name: str, frames: int) -> list[str]:
    graph = load_model(name)
    finn, export_s = timed(lambda: export_finn(graph, seed=0))
    lowered, lower_s = timed(lambda: lower_model(finn))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session, session_s = timed(lambda: ort.InferenceSession(lowered.SerializeToString(), options,
                                                            providers=["CPUExecutionProvider"]))
    shape = [d.dim_value for d in finn.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    frame_s = [timed(lambda: session.run(None, {"global_in": x}))[1] for _ in range(frames)]
    params = sum(int(np.prod(i.dims)) for i in finn.graph.initializer)
    return [name, str(len(graph.layers)), f"{params / 1e6:.1f} M", f"{len(lowered.graph.node)}",
            f"{lowered.ByteSize() / 1e6:.0f} MB", f"{export_s:.2f}", f"{lower_s:.2f}", f"{session_s:.2f}",
            f"{frame_s[0]:.3f}", f"{statistics.median(frame_s):.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=5)
    args = parser.parse_args()
    header = ["model", "FINN layers", "parameters", "lowered nodes", "lowered size", "export (s)", "lower (s)",
              "ORT session (s)", "first frame (s)", f"frame, median of {args.frames} (s)"]
    rows = [measure(name, args.frames) for name in zoo_names()]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = (f"# Zoo export and emulation\n\n`.venv/bin/python benchmarks/zoo_export_bench.py --frames {args.frames}` "
            f"on {os.cpu_count()} cores shared with other work (load average {os.getloadavg()[0]:.1f} at the end); "
            "onnxruntime CPU, 1 intra-op thread, seed 0.\n\n" + "\n".join(lines) + "\n")
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
