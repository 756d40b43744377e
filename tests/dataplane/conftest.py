"""Dataplane tier: gateway and segment processes, each in its own network namespace, wired by the operator's
own builders (SegmentWiring JSON in a ConfigMap-like directory, pod/gateway DNS names in /etc/hosts).

Network: a hub namespace holds a bridge; every "pod" namespace gets a veth into it with one 10.x address, and
the test process reaches the gateway through one more veth (the only address added to the root namespace).
`ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts, which plays the cluster DNS. Everything is
removed in finalizers; segment processes also die with pytest (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dataplane: segment processes in network namespaces (root + iproute2)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.dataplane)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "dataplane tests need root (ip netns, veth)"
    if shutil.which("ip") is None:
        return "dataplane tests need the `ip` command (Debian package iproute2)"
    return None


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_subnet() -> ipaddress.IPv4Network:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for third in range(200, 250):
        net = ipaddress.ip_network(f"10.213.{third}.0/24")
        if str(net.network_address)[:-1] not in routes:
            return net
    raise RuntimeError("no free 10.213.x.0/24 subnet")


@dataclass
class Fabric:
    """A bridge in a hub namespace plus one namespace per pod."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    subnet: ipaddress.IPv4Network = field(default_factory=_free_subnet)
    namespaces: dict[str, str] = field(default_factory=dict)  # pod name -> ip
    hosts: dict[str, str] = field(default_factory=dict)  # DNS name -> ip
    cleanups: list[list[str]] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return f"edf{self.tag}hub"

    def up(self) -> None:
        _sh("ip", "netns", "add", self.hub)
        self.cleanups.append(["ip", "netns", "del", self.hub])
        _sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        # the test process's own leg: last address of the subnet
        client = f"edf{self.tag}c"
        _sh("ip", "link", "add", client, "type", "veth", "peer", "name", "c", "netns", self.hub)
        self.cleanups.insert(0, ["ip", "link", "del", client])
        _sh("ip", "-n", self.hub, "link", "set", "c", "master", "br0", "up")
        _sh("ip", "addr", "add", f"{self.subnet[254]}/24", "dev", client)
        _sh("ip", "link", "set", client, "up")

    def add_pod(self, pod: str, dns_names: list[str]) -> str:
        index = len(self.namespaces) + 1
        ns, ip = f"edf{self.tag}p{index}", str(self.subnet[index])
        _sh("ip", "netns", "add", ns)
        self.cleanups.insert(0, ["ip", "netns", "del", ns])
        _sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{index}", "netns", self.hub)
        _sh("ip", "-n", self.hub, "link", "set", f"v{index}", "master", "br0", "up")
        _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.namespaces[pod] = ns
        for name in dns_names:
            self.hosts[name] = ip
        return ip

    def write_hosts(self) -> None:
        text = "127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in self.hosts.items())
        for ns in self.namespaces.values():
            path = Path("/etc/netns") / ns
            path.mkdir(parents=True, exist_ok=True)
            (path / "hosts").write_text(text)
            self.cleanups.insert(0, ["rm", "-rf", str(path)])

    def down(self) -> None:
        for command in self.cleanups:
            subprocess.run(command, capture_output=True)


@dataclass
class Pipeline:
    """One instance: gateway + segments as processes, the operator's wiring, the unsplit model."""

    fabric: Fabric
    workdir: Path
    model_path: Path
    wirings: list
    gateway_ips: list[str]  # one per gateway replica (each in its own namespace)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    cards: list = field(default_factory=list)  # the CardWirings (one card per segment)

    @property
    def url(self) -> str:
        return self.url_of(0)

    def url_of(self, replica: int) -> str:
        return f"http://{self.gateway_ips[replica]}:8000"

    def grpc_target(self, replica: int = 0) -> str:
        return f"{self.gateway_ips[replica]}:8001"

    def start_segment(self, index: int, extra_env: dict[str, str] | None = None) -> None:
        pod = f"s{index}"
        env = {**os.environ, "ELASTICDF_WIRING": str(self.workdir / "cards" / f"card-{index}.json"),
               "ELASTICDF_ORT_THREADS": "1", "ELASTICDF_MODEL_FILE_ROOT": str(self.workdir), **(extra_env or {})}
        log = open(self.workdir / f"{pod}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[pod] = subprocess.Popen(
            ["ip", "netns", "exec", self.fabric.namespaces[pod], PYTHON, "-m", "elasticdf_segment"],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def start_gateway(self, replica: int = 0) -> None:
        pod = gateway_pod(replica)
        log = open(self.workdir / f"{pod}.log", "ab")  # noqa: SIM115
        self.procs[pod] = subprocess.Popen(
            ["ip", "netns", "exec", self.fabric.namespaces[pod], PYTHON, "-m", "elasticdf_gateway",
             "--model", "testnet", "--wiring", str(self.workdir / "wiring"), "--timeout", "10"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def kill(self, pod: str) -> None:
        proc = self.procs.pop(pod)
        proc.kill()
        proc.wait()

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Every running gateway replica answers ready."""
        deadline = time.monotonic() + timeout
        waiting = [i for i in range(len(self.gateway_ips)) if gateway_pod(i) in self.procs]
        while time.monotonic() < deadline:
            waiting = [i for i in waiting if not _ready(self.url_of(i))]
            if not waiting:
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(self.workdir / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.2)
        logs = {p.name: p.read_text()[-1500:] for p in self.workdir.glob("*.log")}
        raise TimeoutError(f"pipeline not ready after {timeout} s: {logs}")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        self.procs.clear()


def gateway_pod(replica: int) -> str:
    return "gateway" if replica == 0 else f"gateway{replica}"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def operator_wirings(model_path: Path, ranges: list[list[int]], names: list[str]):
    """The card wirings exactly as the operator builds them (emulation mode): one group, one card per segment."""
    sys.path.insert(0, str(ROOT / "operator" / "src"))
    from elasticdf_operator import builders
    from elasticdf_operator.api import ElasticInferenceSpec
    from elasticdf_partitioner.plan import Instance, Segment

    segments = [Segment(node="alveo-0", card=i, card_type="u280", slrs=[0], layers=[names[a], names[b]],
                        layer_range=[a, b], ingress_gbps=1.0, egress_gbps=1.0, resources={}, utilisation={},
                        slr_layers={"0": [a, b]}) for i, (a, b) in enumerate(ranges)]
    instance = Instance(fps=1000.0, fclk_mhz=200.0, cycles_per_frame=1, latency_ms=1.0, segments=segments)
    spec = ElasticInferenceSpec.model_validate(
        {"model": {"artifacts": {"onnx": f"file://{model_path}"}}, "runtime": {"mode": "emulation"}})
    owner = builders.Owner(name="testnet", namespace="default", uid="0")
    places = [builders.CardPlace("alveo-0", i, "u280", 0, f"sha256:{i}") for i in range(len(ranges))]
    cards = builders.group_wiring(owner, spec, 0, "emulation", places, [(0, instance)],
                                  {("alveo-0", i): i for i in range(len(ranges))})
    return builders, owner, cards


def build_pipeline(fabric: Fabric, workdir: Path, model: onnx.ModelProto, ranges: list[list[int]],
                   gateways: int = 1, rewire=None) -> Pipeline:
    """`rewire(cards) -> cards`: changes the operator's card wirings before they are written (e.g. a build)."""
    from elasticdf_contract.wiring import check_chain
    from elasticdf_segment.split import layer_names

    model_path = workdir / "model.onnx"
    onnx.save(model, str(model_path))
    builders, owner, cards = operator_wirings(model_path, ranges, layer_names(model))
    cards = rewire(cards) if rewire else cards
    wirings = [w for card in cards for w in card.segments]
    assert check_chain(wirings) == []
    # what the ConfigMap volume mounts show the card pods and the gateway
    for folder, configmap in (("cards", builders.group_configmap(owner, 0, cards, {}, 1000.0, 1.0)),
                              ("wiring", builders.gateway_configmap(owner, wirings))):
        (workdir / folder).mkdir()
        for key, text in configmap["data"].items():
            (workdir / folder / key).write_text(text)
    # replica 0 holds the Service name (nothing dials it since results hellos; kept as the cluster has it)
    gateway_ips = [fabric.add_pod(gateway_pod(i), [wirings[0].upstream.host] if i == 0 else [])
                   for i in range(gateways)]
    for w in wirings:
        fabric.add_pod(f"s{w.segment}", [w.listen.host])
    fabric.write_hosts()
    return Pipeline(fabric, workdir, model_path, wirings, gateway_ips, cards=cards)


@pytest.fixture
def fabric() -> Iterator[Fabric]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    net = Fabric()
    try:
        net.up()
        yield net
    finally:
        net.down()


@pytest.fixture
def pipeline_factory(fabric: Fabric, tmp_path: Path):
    made: list[Pipeline] = []

    def make(model: onnx.ModelProto, ranges: list[list[int]], gateways: int = 1) -> Pipeline:
        p = build_pipeline(fabric, tmp_path, model, ranges, gateways)
        made.append(p)
        for replica in range(gateways):
            p.start_gateway(replica)
        for w in p.wirings:
            p.start_segment(w.segment)
        p.wait_ready()
        return p

    yield make
    for p in made:
        p.stop()


def infer(url: str, frame, timeout: float = 30.0, request_id: str = "") -> tuple[int, dict]:
    """One JSON request (the protocol echoes `id`: each reply can be matched to its request)."""
    body = json.dumps({"id": request_id, "inputs": [{"name": "x", "shape": list(frame.shape), "datatype": "FP32",
                                                     "data": frame.ravel().tolist()}]}).encode()
    request = urllib.request.Request(f"{url}/v2/models/testnet/infer", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
