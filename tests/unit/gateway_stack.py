"""Real segment processes (emulation mode, onnxruntime) and gateway processes on loopback, wired like the
operator wires pods: each segment on its own 127.x address, each gateway replica dialling every instance.
Used by the gateway tests and benchmarks/gateway_bench.py."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from elasticdf_contract.wiring import Artifacts, Endpoint, SegmentWiring
from elasticdf_segment import split

MODEL = "testnet"
GATEWAY_HOST = "127.0.0.1"


def die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port(host: str = GATEWAY_HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


SERVICE = Endpoint(kind="gateway", host="gateway.invalid", port=8000)  # the gateway Service; nobody dials it


def wirings(model_path: Path, instance: int, ranges: list[list[int]], data_port: int,
            gateway: Endpoint = SERVICE) -> list[SegmentWiring]:
    hosts = [f"127.0.{40 + instance}.{1 + s}" for s in range(len(ranges))]
    listens = [Endpoint(kind="pod", host=h, port=data_port) for h in hosts]
    return [SegmentWiring(instance_id=f"test/{MODEL}-{instance}", instance=instance, segment=s, segments=len(ranges),
                          mode="emulation", model=MODEL, node="n", card=s, card_type="u280", slrs=[0],
                          layer_range=r, layers=["a", "b"], artifacts=Artifacts(onnx=str(model_path)),
                          listen=listens[s], upstream=listens[s - 1] if s else gateway,
                          downstream=listens[s + 1] if s + 1 < len(ranges) else gateway)
            for s, r in enumerate(ranges)]


@dataclass
class Stack:
    workdir: Path
    model: onnx.ModelProto
    ranges: list[list[int]]
    instances: int = 1
    gateway_args: tuple[str, ...] = ()
    # the gateway endpoint in the wiring: a runtime from before results hellos (benchmarks/gateway_bench.py's
    # old gateway) has its last segment dial it, so there it is the one gateway's real address
    gateway: Endpoint = field(default_factory=lambda: SERVICE)
    env: dict[str, str] | None = None  # of every process (PYTHONPATH of another source tree)
    health_port: int = field(default_factory=lambda: free_port("127.0.40.1"))
    data_port: int = field(default_factory=lambda: free_port("127.0.40.1"))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)  # gateway name -> (http, grpc)

    def start_segments(self) -> None:
        model_path = self.workdir / "model.onnx"
        onnx.save(self.model, str(model_path))
        (self.workdir / "wiring").mkdir(exist_ok=True)
        for i in range(self.instances):
            for w in wirings(model_path, i, self.ranges, self.data_port, self.gateway):
                path = self.workdir / "wiring" / f"instance-{i}-segment-{w.segment}.json"
                path.write_text(w.model_dump_json())
                cut = self.workdir / f"segment-{w.segment}.onnx"  # what the segment would cut from the model
                onnx.save(split.cut(self.model, *w.layer_range), str(cut))
                self.spawn(f"i{i}s{w.segment}", "elasticdf_segment", "--wiring", str(path), "--mode", "emulation",
                            "--onnx", str(cut), "--bind", w.listen.host, "--health-port", str(self.health_port))

    def start_gateway(self, name: str = "gw0", *extra: str) -> str:
        http, grpc = free_port(), free_port()
        self.ports[name] = (http, grpc)
        self.spawn(name, "elasticdf_gateway", "--model", MODEL, "--wiring", str(self.workdir / "wiring"),
                    "--host", GATEWAY_HOST, "--port", str(http), "--grpc-port", str(grpc),
                    "--segment-health-port", str(self.health_port), *self.gateway_args, *extra)
        return name

    def url(self, name: str = "gw0") -> str:
        return f"{GATEWAY_HOST}:{self.ports[name][0]}"

    def grpc_url(self, name: str = "gw0") -> str:
        return f"{GATEWAY_HOST}:{self.ports[name][1]}"

    def spawn(self, name: str, module: str, *argv: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it
        self.procs[name] = subprocess.Popen([sys.executable, "-m", module, *argv], stdout=log,
                                            stderr=subprocess.STDOUT, preexec_fn=die_with_parent, env=self.env)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, name: str = "gw0", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc_name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc_name} exited: {self.log(proc_name)[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.url(name)}/v2/health/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout} s: {self.log(name)[-3000:]}")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
