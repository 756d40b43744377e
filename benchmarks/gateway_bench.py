"""Inference gateway throughput and latency: the new gateway (aiohttp + grpc.aio, binary tensors, batching) and the
old one (http.server, JSON only, commit 01a7457) under the same load, alone and end to end.

Rows: (a) 1x3x16x16 FP32 as JSON (REST), (b) 1x3x224x224 UINT8 with binary tensors (REST), (c) the same over gRPC;
each at 1, 8 and 64 concurrent clients that send their next request as soon as the previous one returns.

Two setups (and a floor), each a real stack of processes on loopback (tests/unit/gateway_stack.py, wired as the
operator wires pods):
- gateway alone: the instance is ONE segment process (the real segment runtime and framing) whose model is an
  echo: it answers every frame with its first K values, K = the model's output size (10 for the 16x16 toy
  model, 1000 for ResNet-50 at 224x224). Nearly all the time is the gateway's, and the result is as big as the
  real model's (a pure identity would send 600 kB of FP32 back per 224x224 request, which no classifier does).
- end to end: the model's layers cut into 2 emulated segments (onnxruntime, 1 thread each): the toy plain CNN
  for (a); for (b)/(c) a 2-conv CNN at 224x224 (about 4 ms of compute per frame on one core here).
- floor (gateway alone rows only): benchmarks/floor_server.py, the gateway's server stack (aiohttp + grpc.aio on
  uvloop) with nothing behind it, answering every request with a prepared reply of the gateway's size: what the
  stack and loopback TCP cost per request, so the gateway's CPU per inference above it is its own work.

The old gateway needs its own segment runtime (its last segment dials the gateway; the new one waits for the
gateway's results hello), so both are taken from `git archive 01a7457` into a temp dir and run with PYTHONPATH;
it speaks JSON only, so it is measured for row (a) only.

Load: `--client-procs` processes (spawned, each its own asyncio loop with uvloop) split the clients; REST over
aiohttp keep-alive connections, gRPC over one channel per process with the protocol's generated stub. Bodies
are encoded once; every reply's status and length are checked (a reply of the wrong size counts as failed),
and before the timed runs one reply per row is decoded with tritonclient and compared with the expected output.
Every process's CPU time over the timed window is read from /proc, so the table says what the client cost and
what the rest of the machine (other agents) took.

Run: .venv/bin/python benchmarks/gateway_bench.py [--seconds 6] [--clients 1 8 64] [--client-procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from dataplane_bench import cpu_seconds, machine_busy_seconds
from elasticdf_contract.wiring import Endpoint
from elasticdf_segment import testmodels
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
from gateway_stack import GATEWAY_HOST, MODEL, Stack, free_port  # noqa: E402

OLD_COMMIT = "01a7457"
OLD_SOURCES = ["images/gateway/src", "images/segment/src", "partitioner/src"]
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    size: int  # frames are 1 x 3 x size x size
    datatype: str
    transport: str  # json | binary | grpc


ROWS = [Row("a", "1x3x16x16 FP32 JSON (REST)", 16, "FP32", "json"),
        Row("b", "1x3x224x224 UINT8 binary (REST)", 224, "UINT8", "binary"),
        Row("c", "1x3x224x224 UINT8 (gRPC)", 224, "UINT8", "grpc")]


def echo_model(size: int, outputs: int) -> onnx.ModelProto:
    """One layer ("echo") answering each frame of [N, 3, size, size] with its first `outputs` values."""
    consts = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
              (("echo_start", 0), ("echo_end", outputs), ("echo_axis", 1))]
    nodes = [helper.make_node("Flatten", ["x"], ["echo_flat"], name="echo/Flatten"),
             helper.make_node("Slice", ["echo_flat", "echo_start", "echo_end", "echo_axis"], ["y"], name="echo/Slice")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])
    graph = helper.make_graph(nodes, "echo", [x], [y], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", testmodels.OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@dataclass
class Setup:
    """A stack to measure: which gateway, which model, which rows."""

    setup: str  # alone | e2e
    gateway: str  # new | old | floor
    size: int
    model: onnx.ModelProto
    ranges: list[list[int]]

    @property
    def rows(self) -> list[Row]:
        return [r for r in ROWS if r.size == self.size and (self.gateway != "old" or r.transport == "json")]

    @property
    def outputs(self) -> int:
        """Values per frame in the answer of the echo model (gateway alone)."""
        return self.model.graph.output[0].type.tensor_type.shape.dim[1].dim_value


def setups() -> list[Setup]:
    toy, big = testmodels.plain_cnn(seed=3), testmodels.plain_cnn(seed=3, size=224, channels=2, depth=2)
    made = []
    for gateway in ("new", "old"):
        made += [Setup("alone", gateway, 16, echo_model(16, 10), [[0, 0]]),
                 Setup("e2e", gateway, 16, toy, [[0, 1], [2, 5]])]
        if gateway == "new":
            made += [Setup("alone", gateway, 224, echo_model(224, 1000), [[0, 0]]),
                     Setup("e2e", gateway, 224, big, [[0, 1], [2, 3]])]
    return made + [Setup("alone", "floor", size, echo_model(size, k), [[0, 0]]) for size, k in ((16, 10), (224, 1000))]


def frame_for(row: Row) -> np.ndarray:
    if row.datatype == "UINT8":
        return np.random.default_rng(1).integers(0, 256, (1, 3, row.size, row.size), dtype=np.uint8)
    return testmodels.random_frames(1, size=row.size)[0]


# -- the load (runs in spawned client processes)
@dataclass
class Request:
    """Everything a client process needs to send one row's request again and again (picklable)."""

    transport: str
    target: str  # host:port
    body: bytes  # REST body, or the serialized ModelInferRequest
    headers: dict[str, str] = field(default_factory=dict)


def request_for(row: Row, x: np.ndarray, http: str, grpc_target: str) -> Request:
    tensor = {"name": "x", "shape": list(x.shape), "datatype": row.datatype}
    if row.transport == "json":
        body = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
        return Request("json", http, body, {"Content-Type": "application/json"})
    if row.transport == "binary":  # what tritonclient sends by default
        head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        return Request("binary", http, head + x.tobytes(),
                       {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))})
    from tritonclient.grpc import service_pb2

    message = service_pb2.ModelInferRequest(
        model_name=MODEL, inputs=[service_pb2.ModelInferRequest.InferInputTensor(**tensor)],
        raw_input_contents=[x.tobytes()])
    return Request("grpc", grpc_target, message.SerializeToString())


class RestCaller:
    def __init__(self, request: Request, connections: int):
        import aiohttp

        self.errors = (aiohttp.ClientError, OSError)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                             timeout=aiohttp.ClientTimeout(total=60))
        self.url = f"http://{request.target}/v2/models/{MODEL}/infer"
        self.body, self.headers = request.body, request.headers

    async def __call__(self) -> tuple[int, int]:
        async with self.session.post(self.url, data=self.body, headers=self.headers) as reply:
            return reply.status, len(await reply.read())

    async def close(self) -> None:
        await self.session.close()


class GrpcCaller:
    def __init__(self, request: Request, connections: int):
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self.errors = (grpc.aio.AioRpcError,)
        self.channel = grpc.aio.insecure_channel(request.target, options=[("grpc.max_receive_message_length", -1)])
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.message = service_pb2.ModelInferRequest.FromString(request.body)

    async def __call__(self) -> tuple[int, int]:
        reply = await self.stub.ModelInfer(self.message)
        return 200, len(reply.raw_output_contents[0])

    async def close(self) -> None:
        await self.channel.close()


async def load(request: Request, clients: int, inbox, outbox) -> dict:
    caller = (GrpcCaller if request.transport == "grpc" else RestCaller)(request, clients)
    status, expect = 0, 0
    for _ in range(100):  # the length of a good reply; every timed reply must have it
        try:
            status, expect = await caller()
        except caller.errors:
            status = 0
        if status == 200:
            break
        await asyncio.sleep(0.1)
    outbox.put(("ready", status))
    start, end = await asyncio.get_running_loop().run_in_executor(None, inbox.get)
    latencies: list[float] = []
    counts = {"done": 0, "failed": 0, "dropped": 0}
    first_error: list[str] = []

    async def client() -> None:
        while (now := time.monotonic()) < end:
            try:
                status, size = await caller()
                ok = status == 200 and size == expect
                if not ok and not first_error:
                    first_error.append(f"status {status}, {size} bytes (expected {expect})")
            except caller.errors as exc:
                counts["dropped"] += 1
                first_error[:] = first_error or [f"{type(exc).__name__}: {exc}"[:300]]
                continue
            done = time.monotonic()
            if not ok:
                counts["failed"] += 1
            elif start <= done <= end:
                counts["done"] += 1
                if now >= start:
                    latencies.append(done - now)

    await asyncio.gather(*(client() for _ in range(clients)))
    await caller.close()
    return {**counts, "latencies": latencies, "error": first_error[0] if first_error else ""}


def client_process(request: Request, clients: int, inbox, outbox) -> None:
    import uvloop

    outbox.put(("result", uvloop.run(load(request, clients, inbox, outbox))))


# -- one measurement
@dataclass
class Cell:
    rate: float
    p50_ms: float
    p99_ms: float
    failed: int
    dropped: int
    cores: dict[str, float]
    load1: float
    error: str

    def cpu_us(self, who: str) -> float:
        return self.cores[who] / self.rate * 1e6 if self.rate else float("nan")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """py-spy samples the gateway over the timed window (collapsed stacks: one line per stack, count at the end)."""
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
                             "--nonblocking", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(stack: Stack, request: Request, clients: int, procs: int, warmup: float, seconds: float,
            profile_to: Path | None = None) -> Cell:
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    shares = [clients // procs + (i < clients % procs) for i in range(min(procs, clients))]
    inboxes = [ctx.Queue() for _ in shares]
    workers = [ctx.Process(target=client_process, args=(request, n, inbox, outbox), daemon=True)
               for n, inbox in zip(shares, inboxes)]
    for w in workers:
        w.start()
    for _ in workers:
        kind, status = outbox.get(timeout=120)
        if status != 200:
            raise RuntimeError(f"gateway does not answer {request.transport} requests (status {status})")
    start = time.monotonic() + warmup
    end = start + seconds
    for inbox in inboxes:
        inbox.put((start, end))
    pids = {"gateway": [stack.procs["gw0"].pid], "segments": [p.pid for n, p in stack.procs.items() if n != "gw0"],
            "client": [w.pid for w in workers]}
    time.sleep(max(0.0, start - time.monotonic()))
    sampler = profile(stack.procs["gw0"].pid, seconds, profile_to) if profile_to else None
    load1 = load_average()
    cpu0 = {k: sum(map(cpu_seconds, v)) for k, v in pids.items()}
    busy0 = machine_busy_seconds()
    time.sleep(max(0.0, end - time.monotonic()))
    wall = seconds
    cores = {k: (sum(map(cpu_seconds, v)) - cpu0[k]) / wall for k, v in pids.items()}
    cores["others"] = max(0.0, (machine_busy_seconds() - busy0) / wall - sum(cores.values()))
    if sampler:
        sampler.wait(60)
    results = [outbox.get(timeout=120)[1] for _ in workers]
    for w in workers:
        w.join(30)
    latencies = np.array([t for r in results for t in r["latencies"]]) * 1e3
    done = sum(r["done"] for r in results)
    return Cell(done / seconds, float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
                float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
                sum(r["failed"] for r in results), sum(r["dropped"] for r in results), cores, load1,
                next((r["error"] for r in results if r["error"]), ""))


# -- correctness of what is measured, with the protocol's own client
def expected_output(setup: Setup, x: np.ndarray) -> np.ndarray:
    if setup.setup == "alone":
        return x.reshape(len(x), -1)[:, :setup.outputs].astype(np.float32)
    session = ort.InferenceSession(setup.model.SerializeToString())
    return session.run(None, {"x": x.astype(np.float32)})[0]


def check_answer(stack: Stack, setup: Setup, row: Row, x: np.ndarray) -> None:
    if row.transport == "grpc":
        import tritonclient.grpc as client
        server = client.InferenceServerClient(stack.grpc_url())
    else:
        import tritonclient.http as client
        server = client.InferenceServerClient(stack.url())
    inp = client.InferInput("x", list(x.shape), row.datatype)
    binary = row.transport == "binary"
    inp.set_data_from_numpy(x, **({} if row.transport == "grpc" else {"binary_data": binary}))
    out = setup.model.graph.output[0].name
    outputs = [client.InferRequestedOutput(out, **({} if row.transport == "grpc" else {"binary_data": binary}))]
    got = server.infer(MODEL, [inp], outputs=outputs).as_numpy(out)
    want = expected_output(setup, x)
    if got is None or not np.array_equal(got, want):
        raise RuntimeError(f"{setup.gateway} gateway ({setup.setup}) answers row {row.key} wrongly: {got} != {want}")


# -- stacks
def old_sources(workdir: Path) -> dict[str, str]:
    """The old gateway and segment runtime (and the partitioner they import) from git, as PYTHONPATH."""
    tree = workdir / "old"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT, *OLD_SOURCES], check=True,
                             capture_output=True).stdout
    tree.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(str(tree / s) for s in OLD_SOURCES))


def start(setup: Setup, workdir: Path, old_env: dict[str, str]) -> Stack:
    if setup.gateway == "floor":  # no segments: the server stack answers by itself
        here = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
        stack = Stack(workdir, setup.model, setup.ranges, env=dict(os.environ, PYTHONPATH=here))
        stack.ports["gw0"] = (free_port(), free_port())
        stack.spawn("gw0", "floor_server", GATEWAY_HOST, *map(str, stack.ports["gw0"]), str(setup.outputs))
    elif setup.gateway == "new":
        stack = Stack(workdir, setup.model, setup.ranges)
        stack.start_segments()
        stack.start_gateway("gw0")
    else:  # the old last segment dials the one gateway on its only port
        port = free_port()
        stack = Stack(workdir, setup.model, setup.ranges, env=old_env,
                      gateway=Endpoint(kind="gateway", host=GATEWAY_HOST, port=port))
        stack.start_segments()
        stack.ports["gw0"] = (port, 0)
        stack.spawn("gw0", "elasticdf_gateway", "--model", MODEL, "--wiring", str(workdir / "wiring"), "--host",
                    GATEWAY_HOST, "--port", str(port), "--segment-health-port", str(stack.health_port))
    stack.wait_ready("gw0")
    return stack


def run(args: argparse.Namespace) -> list[tuple[Setup, Row, int, Cell]]:
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        old_env = old_sources(Path(tmp))
        chosen = [s for s in setups() if args.only in (None, s.gateway) and args.setup in (None, s.setup)
                  and (args.rows is None or any(r.key in args.rows for r in s.rows))]
        for n, setup in enumerate(chosen):
            workdir = Path(tmp) / f"stack{n}"
            workdir.mkdir()
            with start(setup, workdir, old_env) as stack:
                for row in [r for r in setup.rows if args.rows is None or r.key in args.rows]:
                    x = frame_for(row)
                    if setup.gateway != "floor":  # whose answers are not the model's
                        check_answer(stack, setup, row, x)
                    request = request_for(row, x, stack.url(), stack.grpc_url() if setup.gateway != "old" else "")
                    for clients in args.clients:
                        where = (Path(args.profile) / f"{setup.setup}-{setup.gateway}-{row.key}-{clients}.txt"
                                 if args.profile else None)
                        cells = []
                        for _ in range(args.repeat):
                            cells.append(measure(stack, request, clients, args.client_procs, args.warmup,
                                                 args.seconds, where))
                            report(setup, row, clients, cells[-1])
                        measured.append((setup, row, clients, sorted(cells, key=lambda c: c.cpu_us("gateway"))))
    return measured


def report(setup: Setup, row: Row, clients: int, cell: Cell) -> None:
    print(f"{setup.setup:5} {setup.gateway} ({row.key}) {clients:3} clients: {cell.rate:7.0f}/s "
          f"p50 {cell.p50_ms:6.2f} p99 {cell.p99_ms:7.2f} ms failed {cell.failed} dropped {cell.dropped} "
          f"cores {({k: round(v, 2) for k, v in cell.cores.items()})} load {cell.load1} {cell.error}", flush=True)


# -- the table
def gateway_cpu(cells: list[Cell]) -> str:
    """The median window's gateway CPU per inference, and the range over the windows when there are several."""
    median = f"{cells[len(cells) // 2].cpu_us('gateway'):.0f}"
    if len(cells) == 1:
        return median
    return f"{median} ({cells[0].cpu_us('gateway'):.0f}-{cells[-1].cpu_us('gateway'):.0f})"


def table_rows(measured, which: str) -> list[str]:
    lines = []
    for setup, row, clients, cells in measured:
        if setup.setup != which:
            continue
        c = cells[len(cells) // 2]
        gw = {"new": "new", "old": f"old ({OLD_COMMIT})", "floor": "floor (server stack alone)"}[setup.gateway]
        cores = " / ".join(f"{c.cores[k]:.2f}" for k in ("gateway", "segments", "client", "others"))
        lines.append(f"| ({row.key}) {row.title} | {clients} | {gw} | **{c.rate:.0f}** | {c.p50_ms:.2f} | "
                     f"{c.p99_ms:.2f} | {sum(x.failed + x.dropped for x in cells)} | {gateway_cpu(cells)} | "
                     f"{c.cpu_us('client'):.0f} | {cores} | {c.load1:.1f} |")
    return lines


HEAD = ["| row | clients | gateway | inferences/s | p50 ms | p99 ms | failed | gateway CPU µs/inference "
        "| client CPU µs/inference | cores: gateway / segments / client / others | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]


def write(measured, args: argparse.Namespace) -> str:
    command = (f".venv/bin/python benchmarks/gateway_bench.py --seconds {args.seconds:g} --clients "
               f"{' '.join(map(str, args.clients))} --client-procs {args.client_procs} --repeat {args.repeat}")
    text = "\n".join([
        "# Gateway benchmark", "",
        f"`{command}` on {os.cpu_count()} cores shared with other agents (load average and the cores other "
        f"processes took during each {args.seconds:g} s window are in the table). Clients send their next request "
        f"as soon as the previous one returns ({args.client_procs} client processes, asyncio + uvloop, aiohttp "
        "keep-alive / one gRPC channel each; bodies encoded once, every reply's status and length checked). "
        "\"failed\" = non-200 replies, replies of the wrong size and dropped connections over the whole run. "
        "CPU µs/inference = that process's CPU time in the window / inferences completed in it: the gateway's own "
        "cost, and what the load generator cost. Each cell is measured in "
        f"{args.repeat} window(s); the row shows the window with the median gateway CPU per inference, and the "
        "range over all windows in parentheses (\"failed\" counts all windows).", "",
        "## Gateway alone (the instance is one segment process answering with the first K values of each frame: "
        "K = 10 for (a), 1000 = ResNet-50's classes for (b)/(c); \"floor\": benchmarks/floor_server.py, the "
        "gateway's server stack alone answering prepared replies of the same size)", "",
        *HEAD, *table_rows(measured, "alone"), "",
        "## End to end (2 emulated segments: the toy plain CNN for (a); a 2-conv CNN at 224x224, about 4 ms per "
        "frame on one core, for (b)/(c))", "",
        *HEAD, *table_rows(measured, "e2e"), "",
        f"The old gateway (http.server, commit {OLD_COMMIT}, with its own segment runtime) speaks JSON only, so "
        "only row (a) compares directly.", ""])
    Path(args.out).write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=6.0, help="timed window per cell")
    p.add_argument("--warmup", type=float, default=1.5, help="load before the window opens")
    p.add_argument("--repeat", type=int, default=1, help="windows per cell (the table shows the median one: the "
                   "gateway's CPU per inference varies with the machine's load from window to window)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--client-procs", type=int, default=2, help="client processes sharing the clients")
    p.add_argument("--only", choices=["new", "old", "floor"], help="measure one gateway only (profiling runs)")
    p.add_argument("--setup", choices=["alone", "e2e"], help="measure one setup only")
    p.add_argument("--rows", nargs="+", choices=[r.key for r in ROWS], help="measure these rows only")
    p.add_argument("--profile", metavar="DIR", help="record the gateway with py-spy (pip install py-spy) into DIR; "
                   "the profiler costs CPU, so numbers of a profiled run are not for the table")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "gateway.md"))
    args = p.parse_args()
    measured = run(args)
    print(write(measured, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
