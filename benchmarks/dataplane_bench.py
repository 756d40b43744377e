"""Emulated pipeline throughput vs its slowest segment alone, and latency added per hop.

Fair by construction: "segment alone" and "pipeline" are measured the same way. Every segment runs as its own
`python -m elasticdf_segment` process (1 onnxruntime thread), and this program plays the gateway with the raw
frame protocol (send_frame / FrameReader, the segment runtime's own framing) in both cases, exactly as a gateway
replica connects: requests into the first segment, results from the last one over a connection it opens with a
results hello (framing.results_hello; request ids carry its origin). A segment alone is a
one-segment pipeline client -> s_i -> client fed with that segment's real inputs; the pipeline is
client -> s0 -> ... -> client. All those processes are started once per case and the measurements are interleaved
(alone s0, alone s1, ..., pipeline; repeated REPS times), so load from other work on the machine hits both sides
alike; the table gives the median and the min-max spread over the repetitions. The ratio keeps its meaning:
pipeline fps / fps of the slowest segment alone.

Run: .venv/bin/python benchmarks/dataplane_bench.py [--reps 5] [--frames 1500]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from elasticdf_contract.wiring import Endpoint, SegmentWiring
from elasticdf_segment import split, testmodels
from elasticdf_segment.framing import (
    KIND_TENSOR,
    ORIGIN_SHIFT,
    Frame,
    FrameReader,
    connect,
    encode,
    results_hello,
    send_frame,
)

WARMUP = 100  # results dropped before the clock starts (pipeline fill, onnxruntime first runs)
DISTINCT = 64  # distinct input frames, cycled
ORIGIN = 1  # this client's gateway origin: the last segment returns request ids carrying it over our results hello


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have been busy (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def compute_ms(model: onnx.ModelProto, frames) -> float:
    """Per-frame onnxruntime time in-process (no framing): the compute part of the latency."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(model.SerializeToString(), options)
    name = session.get_inputs()[0].name
    for f in frames[:20]:
        session.run(None, {name: f})
    start = time.perf_counter()
    for f in frames:
        session.run(None, {name: f})
    return (time.perf_counter() - start) / len(frames) * 1e3


def dial(host: str, port: int, attempts: int = 100) -> socket.socket:
    """Connect once the segment process listens (it starts in the background)."""
    for _ in range(attempts - 1):
        try:
            return connect(host, port)
        except OSError:
            time.sleep(0.1)
    return connect(host, port)


class Chain:
    """Segment processes wired client -> s0 -> ... -> client, and the client's two connections: requests to the
    first segment, results from the last one (subscribed with a results hello, as a gateway replica does)."""

    def __init__(self, parts: list[onnx.ModelProto], ranges: list[list[int]], workdir: Path, tag: str,
                 env: dict[str, str] | None = None):
        gateway = Endpoint(kind="gateway", host="gateway.invalid", port=8000)  # the Service; nobody dials it
        listens = [Endpoint(kind="pod", host="127.0.0.1", port=free_port()) for _ in parts]
        self.procs = []
        for i, part in enumerate(parts):
            path = workdir / f"{tag}-s{i}.onnx"
            onnx.save(part, str(path))
            w = SegmentWiring(instance_id=f"bench/{tag}", instance=0, segment=i, segments=len(parts),
                              mode="emulation", model="bench", node="local", card=i, card_type="u280", slrs=[0],
                              layer_range=ranges[i], layers=["", ""], listen=listens[i],
                              upstream=listens[i - 1] if i else gateway,
                              downstream=listens[i + 1] if i + 1 < len(parts) else gateway)
            (workdir / f"{tag}-s{i}.json").write_text(w.model_dump_json())
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "elasticdf_segment", "--wiring", str(workdir / f"{tag}-s{i}.json"),
                 "--onnx", str(path), "--threads", "1", "--health-port", str(free_port())],
                stderr=subprocess.DEVNULL, env=env))
        self.entry, self.exit = listens[0].port, listens[-1].port

    def connect(self, probe: np.ndarray) -> None:
        results = dial("127.0.0.1", self.exit)
        results.sendall(encode(results_hello(ORIGIN, "dataplane_bench")))
        self.reader = FrameReader(results)
        self.reader.read()  # the last segment's echo: our results are routed from now on
        self.sender = dial("127.0.0.1", self.entry)
        self._probe(results, probe)

    def _probe(self, results: socket.socket, probe: np.ndarray) -> None:
        """One frame through before timing: the chain works end to end (its segments dial each other with
        backoff at start)."""
        results.settimeout(2.0)
        for _ in range(30):
            send_frame(self.sender, Frame.of_tensor(self.request_id(0), probe))
            try:
                self._receive()
                break
            except TimeoutError:
                continue
        else:
            raise RuntimeError("no result from the pipeline after 30 probes")
        results.settimeout(None)

    @staticmethod
    def request_id(i: int) -> int:
        return (ORIGIN << ORIGIN_SHIFT) | i

    def _receive(self) -> None:
        frame = self.reader.read()
        if frame is None or frame.kind != KIND_TENSOR:
            raise RuntimeError(f"pipeline failed: {frame and frame.message}")

    def rtt_ms(self, frames, n: int = 200) -> float:
        """Median time of one frame through the idle chain."""
        times = []
        for i in range(n):
            start = time.perf_counter()
            send_frame(self.sender, Frame.of_tensor(self.request_id(i), frames[i % len(frames)]))
            self._receive()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    def throughput(self, frames, count: int) -> tuple[float, dict[str, float]]:
        """Frames per second with the chain kept full, and the CPU cores each process used meanwhile."""
        def feed() -> None:
            for i in range(count + WARMUP):
                send_frame(self.sender, Frame.of_tensor(self.request_id(i), frames[i % len(frames)]))

        sender = threading.Thread(target=feed, daemon=True)
        sender.start()
        for _ in range(WARMUP):
            self._receive()
        pids = {f"s{i}": p.pid for i, p in enumerate(self.procs)} | {"client": os.getpid()}
        cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
        busy0 = machine_busy_seconds()
        start = time.perf_counter()
        for _ in range(count):
            self._receive()
        wall = time.perf_counter() - start
        cores = {k: (cpu_seconds(pid) - cpu0[k]) / wall for k, pid in pids.items()}
        cores["others"] = max(0.0, (machine_busy_seconds() - busy0) / wall - sum(cores.values()))
        sender.join()
        return count / wall, cores

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for sock in (getattr(self, "sender", None), getattr(getattr(self, "reader", None), "sock", None)):
            if sock is not None:
                sock.close()


def run(model: onnx.ModelProto, ranges: list[list[int]], workdir: Path, reps: int, count: int,
        env: dict[str, str] | None = None) -> dict:
    parts = split.split(model, ranges)
    inputs = [testmodels.random_frames(DISTINCT, size=32)]
    for part in parts[:-1]:  # each segment's own input stream, for its alone measurement
        s = ort.InferenceSession(part.SerializeToString())
        inputs.append([s.run(None, {s.get_inputs()[0].name: f})[0] for f in inputs[-1]])
    compute = [compute_ms(p, inputs[i]) for i, p in enumerate(parts)]
    chains = [Chain([p], [ranges[i]], workdir, f"alone{i}", env) for i, p in enumerate(parts)]
    pipeline = Chain(parts, ranges, workdir, "pipeline", env)
    try:
        for i, c in enumerate(chains):
            c.connect(inputs[i][0])
        pipeline.connect(inputs[0][0])
        rtt = pipeline.rtt_ms(inputs[0])
        alone_runs, pipe_runs, ratios, cores = [[] for _ in parts], [], [], []
        for _ in range(reps):
            for i, c in enumerate(chains):
                alone_runs[i].append(c.throughput(inputs[i], count)[0])
            fps, used = pipeline.throughput(inputs[0], count)
            pipe_runs.append(fps)
            cores.append(used)
            ratios.append(fps / min(runs[-1] for runs in alone_runs))
            print(f"  rep: alone {[round(r[-1]) for r in alone_runs]} pipeline {fps:.0f} ratio {ratios[-1]:.3f} "
                  f"cores {({k: round(v, 2) for k, v in used.items()})}", flush=True)
    finally:
        for c in [*chains, pipeline]:
            c.close()
    hops = len(parts) + 1
    median_cores = {k: round(statistics.median(c[k] for c in cores), 2) for k in cores[0]}
    return {"segments": len(parts), "reps": reps, "frames": count,
            "alone_fps": [round(statistics.median(r), 1) for r in alone_runs],
            "pipeline_fps": round(statistics.median(pipe_runs), 1),
            "pipeline_fps_range": [round(min(pipe_runs), 1), round(max(pipe_runs), 1)],
            "ratio": round(statistics.median(ratios), 3), "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "ratios": [round(r, 3) for r in ratios], "rtt_ms": round(rtt, 3), "compute_ms": round(sum(compute), 3),
            "per_hop_ms": round((rtt - sum(compute)) / hops, 3), "pipeline_cores": median_cores}


CASES = [("plain_cnn c64 32x32, 2 segments", lambda: testmodels.plain_cnn(channels=64, size=32), [[0, 1], [2, 5]]),
         ("residual_cnn c64 32x32, 2 segments", lambda: testmodels.residual_cnn(channels=64, size=32),
          [[0, 3], [4, 8]])]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--frames", type=int, default=1500, help="frames timed per throughput measurement")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "dataplane.md"))
    p.add_argument("--segment-src", help="run the segments from this source tree instead (e.g. an old checkout's "
                   "images/segment/src, to compare runtimes under the same client)")
    args = p.parse_args()
    env = None
    if args.segment_src:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([args.segment_src, os.environ.get("PYTHONPATH", "")]))
    rows, budget = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, ranges in CASES:
            r = run(make(), ranges, Path(tmp), args.reps, args.frames, env)
            print(name, json.dumps(r), flush=True)
            c = r["pipeline_cores"]
            rows.append(f"| {name} | {' / '.join(map(str, r['alone_fps']))} | {r['pipeline_fps']} "
                        f"({r['pipeline_fps_range'][0]}-{r['pipeline_fps_range'][1]}) | **{r['ratio']}** "
                        f"({r['ratio_range'][0]}-{r['ratio_range'][1]}) | {r['rtt_ms']} | {r['compute_ms']} "
                        f"| {r['per_hop_ms']} |")
            segs = " + ".join(f"{v}" for k, v in c.items() if k.startswith("s"))
            budget.append(f"| {name} | {segs} | {c['client']} | {c['others']} | {round(sum(c.values()), 2)} "
                          f"| {' '.join(map(str, r['ratios']))} |")
    cores = os.cpu_count()
    table = "\n".join([
        "# Data plane benchmark (emulation)", "",
        f"`.venv/bin/python benchmarks/dataplane_bench.py --reps {args.reps} --frames {args.frames}` on {cores} "
        "cores shared with other work. Each segment is a `python -m elasticdf_segment` process with 1 onnxruntime "
        "thread on localhost; the benchmark plays the gateway with the raw frame protocol (no REST). "
        "\"Alone\" = that segment as a one-segment pipeline behind the same client and framing, fed its real "
        "inputs; alone and pipeline runs are interleaved; each cell is the median of the repetitions, "
        "(min-max) in brackets; the ratio is computed per repetition against the slowest segment alone of that "
        "repetition.", "",
        "| pipeline | each segment alone (fps) | pipeline (fps) | pipeline / slowest | 1-frame RTT (ms) "
        "| sum of compute (ms) | added per hop (ms) |", "|---|---|---|---|---|---|---|", *rows, "",
        "Target: pipeline / slowest >= 0.9. Hops = segments + 1 (gateway -> s0 -> ... -> gateway); added per hop "
        "= (RTT - in-process onnxruntime time of all segments) / hops.", "",
        f"CPU budget while the pipeline runs (cores used, median; the machine has {cores}):", "",
        "| pipeline | segments (s0 + s1 ...) | client (sender + receiver) | other processes | total "
        "| ratio of each repetition |", "|---|---|---|---|---|---|",
        *budget, ""])
    Path(args.out).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
