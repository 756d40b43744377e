"""Emulated pipeline throughput vs its slowest segment alone, and latency added per hop.

Segments run as separate processes on localhost (1 onnxruntime thread each; the machine's cores bound how many
segments can run in parallel); this program plays the gateway with the raw frame protocol, so the numbers are
the segment runtime's, not the REST layer's. Run: .venv/bin/python benchmarks/dataplane_bench.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import onnx
import onnxruntime as ort
from elasticdf_partitioner.wiring import Endpoint, SegmentWiring
from elasticdf_segment import split, testmodels
from elasticdf_segment.framing import KIND_HELLO, Frame, connect, encode, read_frame

FRAMES = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alone_fps(model: onnx.ModelProto, frames) -> tuple[float, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options)
    name = session.get_inputs()[0].name
    tensors = [frames[0]]
    for _ in range(20):
        session.run(None, {name: tensors[0]})
    start = time.perf_counter()
    for f in frames:
        session.run(None, {name: f})
    seconds = time.perf_counter() - start
    return len(frames) / seconds, seconds / len(frames)


def run(model: onnx.ModelProto, ranges: list[list[int]], workdir: Path) -> dict:
    parts = split.split(model, ranges)
    inputs = testmodels.random_frames(FRAMES, size=32)
    seg_inputs = [inputs]
    for part in parts[:-1]:  # each segment's own input for the alone measurement
        s = ort.InferenceSession(part.SerializeToString())
        seg_inputs.append([s.run(None, {s.get_inputs()[0].name: f})[0] for f in seg_inputs[-1][:200]])
    alone = [alone_fps(p, seg_inputs[i][:200]) for i, p in enumerate(parts)]
    results_port = free_port()
    listens = [Endpoint(kind="pod", host="127.0.0.1", port=free_port()) for _ in parts]
    gateway = Endpoint(kind="gateway", host="127.0.0.1", port=results_port)
    results = socket.create_server(("127.0.0.1", results_port))
    procs = []
    for i, part in enumerate(parts):
        path = workdir / f"s{i}.onnx"
        onnx.save(part, str(path))
        w = SegmentWiring(instance_id="bench/m-0", instance=0, segment=i, segments=len(parts), mode="emulation",
                          model="bench", node="local", card=i, card_type="u280", slrs=[0], layer_range=ranges[i],
                          layers=["", ""], listen=listens[i], upstream=listens[i - 1] if i else gateway,
                          downstream=listens[i + 1] if i + 1 < len(parts) else gateway)
        (workdir / f"s{i}.json").write_text(w.model_dump_json())
        procs.append(subprocess.Popen([sys.executable, "-m", "elasticdf_segment",
                                       "--wiring", str(workdir / f"s{i}.json"), "--onnx", str(path),
                                       "--threads", "1", "--health-port", str(free_port())],
                                      stderr=subprocess.DEVNULL))
    try:
        conn, _ = results.accept()
        stream = conn.makefile("rb")
        assert read_frame(stream).kind == KIND_HELLO  # the last segment introduces itself first
        for _ in range(50):
            try:
                sender = connect("127.0.0.1", listens[0].port)
                break
            except OSError:
                time.sleep(0.1)
        # latency: one frame at a time
        rtts = []
        for i in range(100):
            start = time.perf_counter()
            sender.sendall(encode(Frame.of_tensor(i, inputs[i])))
            read_frame(stream)
            rtts.append(time.perf_counter() - start)
        rtts = sorted(rtts)[10:90]
        # throughput: keep the pipeline full
        threading.Thread(target=lambda: [sender.sendall(encode(Frame.of_tensor(1000 + i, f)))
                                         for i, f in enumerate(inputs)], daemon=True).start()
        start = time.perf_counter()
        for _ in inputs:
            read_frame(stream)
        fps = len(inputs) / (time.perf_counter() - start)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    compute = sum(a[1] for a in alone)
    rtt = sum(rtts) / len(rtts)
    hops = len(parts) + 1
    return {"segments": len(parts), "alone_fps": [round(a[0], 1) for a in alone], "pipeline_fps": round(fps, 1),
            "ratio": round(fps / min(a[0] for a in alone), 3), "rtt_ms": round(rtt * 1e3, 3),
            "compute_ms": round(compute * 1e3, 3), "per_hop_ms": round((rtt - compute) / hops * 1e3, 3)}


def main() -> int:
    cases = [("plain_cnn c64 32x32, 2 segments", testmodels.plain_cnn(channels=64, size=32), [[0, 1], [2, 5]]),
             ("residual_cnn c64 32x32, 2 segments", testmodels.residual_cnn(channels=64, size=32), [[0, 3], [4, 8]])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, ranges in cases:
            r = run(model, ranges, Path(tmp))
            print(name, json.dumps(r))
            rows.append(f"| {name} | {' / '.join(map(str, r['alone_fps']))} | {r['pipeline_fps']} | {r['ratio']} "
                        f"| {r['rtt_ms']} | {r['compute_ms']} | {r['per_hop_ms']} |")
    table = "\n".join([
        "# Data plane benchmark (emulation)", "",
        f"`.venv/bin/python benchmarks/dataplane_bench.py` on {os.cpu_count()} cores, {FRAMES} frames, "
        "1 onnxruntime thread per segment, segments as processes on localhost, raw frame protocol (no REST).", "",
        "| pipeline | each segment alone (fps) | pipeline (fps) | pipeline / slowest | 1-frame RTT (ms) "
        "| sum of compute (ms) | added per hop (ms) |", "|---|---|---|---|---|---|---|", *rows, "",
        "Target: pipeline / slowest >= 0.9. Hops = segments + 1 (gateway -> s0 -> ... -> gateway).", ""])
    out = Path(__file__).parent / "results" / "dataplane.md"
    out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
