"""`elasticdf emulate`: plan a model, run every planned instance as local processes, check the answers.

Each segment of the plan runs as the real segment runtime (`python -m elasticdf_segment`, emulation backend)
on its own loopback address (127.0.0.2, 127.0.0.3, ...: the same ports on every "pod", as in a cluster), each
instance behind its own gateway (`python -m elasticdf_gateway`) on 127.0.0.1. The segment wiring is the one
the operator writes, with loopback addresses instead of pod names. Every instance gets the same random frames;
its answers must equal the unsplit model's, run in this process. Nothing listens beyond 127.0.0.0/8 and every
process started here is stopped (and dies with this one).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from elasticdf_contract.wiring import Artifacts, Endpoint, SegmentWiring
from rich.console import Console
from rich.table import Table

from .errors import ElasticDFError
from .plan import Plan

GATEWAY_HOST = "127.0.0.1"
START_TIMEOUT_S = 300.0  # a segment of ResNet-50 loads and cuts a ~100 MB model before it is ready


class EmulationFailed(ElasticDFError):
    """A process of the emulated pipeline did not start or a request failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .plan_command import add_arguments as plan_arguments

    plan_arguments(parser)
    parser.add_argument("--frames", type=int, default=8, help="frames pushed through every instance")
    parser.add_argument("--seed", type=int, default=0, help="seed of zoo weights and of the frames")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight per instance")
    parser.add_argument("--instances", type=int, default=None,
                        help="emulate only the first N planned instances (default: all)")


def run(args: argparse.Namespace, console: Console) -> int:
    from .modelio import runnable_model
    from .plan_command import plan_for

    plan, _graph = plan_for(args)
    console.print(f"{plan.model}: {len(plan.instances)} instance(s), predicted {plan.total_fps:,.0f} fps")
    model = runnable_model(args.model, seed=args.seed)
    frames = random_frames(model, args.frames, args.seed)
    expected = unsplit_outputs(model, frames)
    with tempfile.TemporaryDirectory(prefix="elasticdf-emulate-") as tmp, ExitStack() as stack:
        model_path = Path(tmp) / "model.onnx"
        model_path.write_bytes(model.SerializeToString())
        results = []
        for i, instance in enumerate(plan.instances[:args.instances]):
            gateway = stack.enter_context(EmulatedInstance(plan, i, model_path, Path(tmp) / f"instance-{i}"))
            console.print(f"instance {i}: {len(instance.segments)} segment(s) up, pushing {len(frames)} frames")
            results.append(gateway.push(frames, expected, args.concurrency, model.graph.input[0].name))
    console.print(result_table(plan, results))
    wrong = [r for r in results if r.mismatches]
    if wrong:
        console.print(f"[red]{sum(r.mismatches for r in wrong)} answer(s) differ from the unsplit model[/red]")
        return 1
    console.print(f"every answer of every instance equals the unsplit model's ({len(frames)} frames each)")
    return 0


# ---------------------------------------------------------------------------------------------------------
# frames and the unsplit reference


def random_frames(model, n: int, seed: int) -> list[np.ndarray]:
    """Frames for the model's input: integers in the range of its FINN input datatype, as float32."""
    from onnx import helper

    value = model.graph.input[0]
    shape = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
    low, high = _input_range(model)
    rng = np.random.default_rng(seed)
    dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
    return [rng.integers(low, high + 1, size=shape).astype(dtype) for _ in range(n)]


def _input_range(model) -> tuple[int, int]:
    """The range the lowered model declares for its input (metadata `input_range`, 'lo,hi'), else 0..255."""
    props = {p.key: p.value for p in model.metadata_props}
    low, _, high = props.get("elasticdf.input_range", "0,255").partition(",")
    return int(low), int(high)


def unsplit_outputs(model, frames: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: frame})[0] for frame in frames]


# ---------------------------------------------------------------------------------------------------------
# one instance as processes on loopback


@dataclass
class InstanceResult:
    instance: int
    frames: int
    seconds: float
    mismatches: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (segments share their health port, as pods do)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        if all(_bindable(h, port) for h in hosts):
            return port
    raise EmulationFailed(f"no port free on all of {hosts}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class EmulatedInstance:
    """Segment processes and a gateway for instance `index` of the plan; a context manager that stops them."""

    def __init__(self, plan: Plan, index: int, model_path: Path, workdir: Path):
        self.plan, self.index, self.model_path, self.workdir = plan, index, model_path, workdir
        self.processes: list[subprocess.Popen] = []
        segments = plan.instances[index].segments
        first_host = 2 + sum(len(i.segments) for i in plan.instances[:index])
        self.hosts = [f"127.0.0.{first_host + s}" for s in range(len(segments))]
        self.data_port = _free_port(self.hosts)
        self.health_port = _free_port(self.hosts)
        self.gateway_port = _free_port([GATEWAY_HOST])
        self.grpc_port = _free_port([GATEWAY_HOST])

    def __enter__(self) -> EmulatedInstance:
        self.workdir.mkdir(parents=True)
        try:
            for wiring in self.wirings():
                path = self.workdir / f"instance-{self.index}-segment-{wiring.segment}.json"
                path.write_text(wiring.model_dump_json(indent=2))
                self._start(f"segment-{wiring.segment}", "elasticdf_segment", "--wiring", str(path), "--mode",
                            "emulation", "--bind", wiring.listen.host, "--health-port", str(self.health_port))
            self._start("gateway", "elasticdf_gateway", "--model", self.plan.model, "--wiring", str(self.workdir),
                        "--host", GATEWAY_HOST, "--port", str(self.gateway_port), "--grpc-port", str(self.grpc_port),
                        "--segment-health-port", str(self.health_port), "--reload-seconds", "0")
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wirings(self) -> list[SegmentWiring]:
        instance = self.plan.instances[self.index]
        gateway = Endpoint(kind="gateway", host=GATEWAY_HOST, port=self.gateway_port)
        listens = [Endpoint(kind="pod", host=h, port=self.data_port) for h in self.hosts]
        wirings = []
        for s, seg in enumerate(instance.segments):
            wirings.append(SegmentWiring(
                instance_id=f"emulate/{self.plan.model}-{self.index}", instance=self.index, segment=s,
                segments=len(instance.segments), mode="emulation", model=self.plan.model, node=seg.node,
                card=seg.card, card_type=seg.card_type, slrs=seg.slrs, layer_range=seg.layer_range,
                layers=seg.layers, artifacts=Artifacts(onnx=str(self.model_path)), listen=listens[s],
                upstream=listens[s - 1] if s else gateway,
                downstream=listens[s + 1] if s + 1 < len(listens) else gateway))
        return wirings

    def _start(self, name: str, module: str, *argv: str) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it until it exits
        self.processes.append(subprocess.Popen([sys.executable, "-m", module, *argv], stdout=log,
                                               stderr=subprocess.STDOUT, preexec_fn=_die_with_parent))

    def _wait_ready(self) -> None:
        url = f"http://{GATEWAY_HOST}:{self.gateway_port}/v2/health/ready"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise EmulationFailed(f"instance {self.index}: a process exited early; its log:\n"
                                      f"{self._log_tail(dead[0])}")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise EmulationFailed(f"instance {self.index}: not ready after {START_TIMEOUT_S:.0f} s (logs in "
                              f"{self.workdir})")

    def _log_tail(self, proc: subprocess.Popen) -> str:
        index = self.processes.index(proc)
        logs = sorted(self.workdir.glob("*.log"), key=lambda p: p.stat().st_mtime)
        name = logs[min(index, len(logs) - 1)] if logs else None
        return name.read_text(errors="replace")[-2000:] if name else "(no log)"

    # -- requests
    def push(self, frames: list[np.ndarray], expected: list[np.ndarray], concurrency: int,
             input_name: str) -> InstanceResult:
        start = time.perf_counter()
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            answers = list(pool.map(lambda frame: self._infer(frame, input_name), frames))
        seconds = time.perf_counter() - start
        mismatches = sum(not np.array_equal(a, e) for a, e in zip(answers, expected))
        return InstanceResult(self.index, len(frames), seconds, mismatches)

    def _infer(self, frame: np.ndarray, input_name: str) -> np.ndarray:
        body = json.dumps({"inputs": [{"name": input_name, "shape": list(frame.shape), "datatype": "FP32",
                                       "data": frame.ravel().tolist()}]}).encode()
        url = f"http://{GATEWAY_HOST}:{self.gateway_port}/v2/models/{self.plan.model}/infer"
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                out = json.loads(reply.read())["outputs"][0]
        except urllib.error.HTTPError as err:
            reason = err.read().decode(errors="replace")
            raise EmulationFailed(f"instance {self.index}: request failed: {reason}") from None
        return np.asarray(out["data"]).reshape(out["shape"])


def result_table(plan: Plan, results: list[InstanceResult]) -> Table:
    table = Table(title=f"{plan.model}: emulated instances")
    for column in ("instance", "segments", "cards", "predicted fps", "emulated fps", "frames", "answers"):
        table.add_column(column, justify="left" if column in ("cards", "answers") else "right")
    for result in results:
        instance = plan.instances[result.instance]
        cards = ", ".join(dict.fromkeys(f"{s.node}/{s.card}" for s in instance.segments))
        answers = "identical" if not result.mismatches else f"{result.mismatches} differ"
        table.add_row(str(result.instance), str(len(instance.segments)), cards, f"{instance.fps:,.0f}",
                      f"{result.fps:,.1f}", str(result.frames), answers)
    return table

