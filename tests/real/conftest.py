"""Fixtures for the real-node tier: a fresh control plane (hack/devcluster.py, as tests/e2e does) plus ONE
real worker node (containerd + kubelet + simulated Alveo device plugin, kube-proxy, CoreDNS) with its state
in a temporary directory. Pods really run here.

Needs root and cgroup v1 controllers (skipped otherwise, with the reason). Installs the node's Debian
packages and builds the node programs and images when missing (hack/install-node-packages.sh,
hack/build-tools.sh node; cached under .cache/). Everything is stopped and the host restored at the end,
also when a test fails; if pytest itself is killed, the processes die with it (PR_SET_PDEATHSIG) but
iptables chains, sysctls and the bridge stay until `dev-cluster.sh --state-dir DIR down`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

import devcluster  # noqa: E402
from kube_helpers import fresh_namespace, wait_until  # noqa: E402

NODE = "real-0"
CARD = "u280"
CLUSTER = {"nodes": [{"name": NODE, "cards": [CARD, CARD], "runtime": "real", "switch": "leaf-r"}]}
PROBE_IMAGE = "localhost/elasticdf/probe:test"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real: pods run on a real kubelet node (tests/real)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real)


@contextlib.contextmanager
def _uncaptured(config: pytest.Config) -> Iterator[None]:
    """Let install/build progress reach the terminal (a cold build takes minutes)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield


@pytest.fixture(scope="session")
def real_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(Cluster, state dir) with the control plane and node real-0 Ready with 2 simulated U280 cards."""
    reason = devcluster.real_nodes_unsupported()
    if reason:
        pytest.skip(reason)
    with _uncaptured(request.config):
        devcluster.build_tools()
        devcluster.ensure_node_software()
    state = tmp_path_factory.mktemp("real")
    cluster = devcluster.up(state, state / "kubeconfig", tie_to_parent=True)
    try:
        devcluster.start_real_nodes(state, CLUSTER, tie_to_parent=True, install=False)
        yield cluster
    finally:
        devcluster.down(state)


@pytest.fixture(scope="session")
def core_v1(real_cluster):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(real_cluster.kubeconfig))
    yield client.CoreV1Api(api_client)
    api_client.close()


@pytest.fixture(scope="session")
def probe_image(real_cluster, tmp_path_factory) -> str:
    """tests/real/probe built static and packed from scratch, imported into the real node."""
    out = tmp_path_factory.mktemp("probe")
    env = dict(os.environ, CGO_ENABLED="0")
    subprocess.run(["go", "build", "-trimpath", "-o", str(out / "probe"), "main.go"],
                   cwd=Path(__file__).parent / "probe", env=env, check=True)
    archive = out / "probe.tar"
    devcluster.build_scratch_image(out / "probe", PROBE_IMAGE, archive)
    devcluster.import_archive(devcluster.node_socket(real_cluster.state_dir, NODE), archive)
    return PROBE_IMAGE


@pytest.fixture
def namespace(core_v1) -> Iterator[str]:
    yield from fresh_namespace(core_v1, "real")


@pytest.fixture
def other_namespace(core_v1) -> Iterator[str]:
    yield from fresh_namespace(core_v1, "real")


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., object]:
    return wait_until
