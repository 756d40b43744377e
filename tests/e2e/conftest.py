"""Fixtures for the e2e tier: a real, fresh control plane per test session (hack/devcluster.py).

The session builds the tools when needed (hack/build-tools.sh; a no-op when up to date), starts etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok on random loopback ports with their
state in a temporary directory (so it never clashes with a developer's `hack/dev-cluster.sh up`), and
stops exactly those processes at the end, also when tests fail or pytest is killed (the components
get SIGKILL when the pytest process dies).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

import devcluster  # noqa: E402
from cardpods import POOL_LABEL  # noqa: E402
from kube_helpers import fresh_namespace, uncaptured, wait_until  # noqa: E402

# A small simulated Alveo cluster (DESIGN §5.2) that every session gets; tests that need exact card
# counts create their own nodes with a switch label of their own and select them.
BASELINE_CLUSTER = {
    "nodes": [
        {"name": "alveo-0", "cards": ["u280", "u280"], "switch": "leaf-a"},
        {"name": "alveo-1", "cards": ["u250"], "switch": "leaf-a"},
    ]
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: runs against the real local control plane started by tests/e2e/conftest.py"
    )


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    with uncaptured(request.config):
        devcluster.build_tools()
    state = tmp_path_factory.mktemp("control-plane")
    cluster = devcluster.up(state, state / "kubeconfig", tie_to_parent=True)
    try:
        yield cluster
    finally:
        devcluster.down(state)


@pytest.fixture(scope="session")
def kubeconfig(control_plane: devcluster.Cluster) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def k8s_client(kubeconfig: Path):
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture(scope="session")
def crds(k8s_client) -> list[str]:
    """The generated CRDs (crds/), installed and Established."""
    from elasticdf_operator.local import install_crds

    return install_crds(k8s_client, ROOT / "crds")


@pytest.fixture(scope="session")
def core_v1(k8s_client):
    from kubernetes import client

    return client.CoreV1Api(k8s_client)


@pytest.fixture(scope="session")
def baseline_cluster() -> dict:
    return BASELINE_CLUSTER


@pytest.fixture(scope="session")
def simulated_nodes(kubeconfig: Path) -> list[str]:
    """The baseline kwok nodes, Ready and untainted."""
    devcluster.apply_nodes(kubeconfig, BASELINE_CLUSTER)
    return [n["name"] for n in BASELINE_CLUSTER["nodes"]]


@pytest.fixture
def namespace(core_v1) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards, without waiting)."""
    yield from fresh_namespace(core_v1, "e2e")


@pytest.fixture
def wait_for() -> Callable[..., object]:
    return wait_until


@pytest.fixture
def custom(k8s_client):
    from kubernetes import client

    return client.CustomObjectsApi(k8s_client)


@pytest.fixture
def pool(kubeconfig, core_v1):
    """Make simulated nodes of our own and select them by a label no other test uses. Each argument is a node:
    its card list, or {"cards": [...], "switch": name} (switch names are made unique to the pool, so a
    Fabric can describe them). Node names are `<pool>-<i>` (`cardpods.pool_nodes`)."""
    made: list[str] = []

    def make(*nodes: list[str] | dict) -> dict:
        pool_id = f"sw-{uuid.uuid4().hex[:6]}"
        entries = [n if isinstance(n, dict) else {"cards": n} for n in nodes]
        docs = [{"name": f"{pool_id}-{i}", "cards": e["cards"], "switch": f"{pool_id}-{e.get('switch', 'leaf')}"}
                for i, e in enumerate(entries)]
        devcluster.apply_nodes(kubeconfig, {"nodes": docs})
        for doc in docs:
            core_v1.patch_node(doc["name"], {"metadata": {"labels": {POOL_LABEL: pool_id}}})
        made.extend(d["name"] for d in docs)
        return {"nodeSelector": {POOL_LABEL: pool_id}}

    yield make
    for name in made:
        try:
            core_v1.delete_node(name)
        except Exception:  # noqa: BLE001 (already deleted by the test)
            pass

