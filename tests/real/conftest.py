"""Fixtures for the real-node tier: a fresh control plane (hack/devcluster.py, as tests/e2e does) plus ONE
real worker node (containerd + kubelet + simulated Alveo device plugin, kube-proxy, CoreDNS) with its state
in a temporary directory. Pods really run here: our own images (segment, gateway, operator, built from this
tree by hack/images.sh before the node starts and imports them) and the operator installed by the Helm chart.

Needs root and cgroup v1 controllers (skipped otherwise, with the reason). Installs the node's Debian
packages and builds the node programs and images when missing (hack/install-node-packages.sh,
hack/build-tools.sh node; cached under .cache/). Everything is stopped and the host restored at the end,
also when a test fails; if pytest itself is killed, the processes die with it (PR_SET_PDEATHSIG) but
iptables chains, sysctls and the bridge stay until `dev-cluster.sh --state-dir DIR down`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

import devcluster  # noqa: E402
from kube_helpers import fresh_namespace, uncaptured, wait_until  # noqa: E402

NODE = "real-0"
CARD = "u280"
CLUSTER = {"nodes": [{"name": NODE, "cards": [CARD, CARD], "runtime": "real", "switch": "leaf-r"}]}
PROBE_IMAGE = "localhost/elasticdf/probe:test"
IMAGES = ("segment", "gateway", "operator")  # what the operator, its segments and gateways run
CHART = ROOT / "charts" / "elastic-df"
OPERATOR_NAMESPACE = "elastic-system"
LAST = ("test_down_leaves_nothing",)  # takes the node down: after every other test of the tier


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real: pods run on a real kubelet node (tests/real)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real)
    items.sort(key=lambda item: item.name in LAST)  # stable: the rest keep file order


@pytest.fixture(scope="session")
def real_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(Cluster, state dir) with the control plane and node real-0 Ready with 2 simulated U280 cards."""
    reason = devcluster.real_nodes_unsupported()
    if reason:
        pytest.skip(reason)
    with uncaptured(request.config):
        devcluster.build_tools()
        devcluster.ensure_node_software()
        # before the node starts, which imports every .cache/images/*.tar: the pods run this tree's code
        # (nothing is rebuilt when nothing changed, ~20 s; cold ~7 min, see benchmarks/results/images.md)
        subprocess.run(["bash", str(ROOT / "hack" / "images.sh"), "build", *IMAGES], check=True)
    state = tmp_path_factory.mktemp("real")
    cluster = devcluster.up(state, state / "kubeconfig", tie_to_parent=True)
    try:
        # the deadline covers the image import, which took 132 s with load average 10 on the shared 2 cores
        devcluster.start_real_nodes(state, CLUSTER, tie_to_parent=True, install=False, timeout=360)
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


@pytest.fixture
def new_namespace(core_v1) -> Iterator[Callable[[str], str]]:
    """Makes namespaces for a test (fresh_namespace, prefix as given) and deletes them when it ends, passed or
    failed: a failed test's namespace kept its card pods, so the tests after it found no free card (a CI run's
    roll test was RollBlocked behind the failed build test's namespace)."""
    made: list[Iterator[str]] = []

    def make(prefix: str) -> str:
        made.append(fresh_namespace(core_v1, prefix))
        return next(made[-1])
    yield make
    for namespaces in made:
        next(namespaces, None)


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., object]:
    return wait_until


def helm(cluster, *args: str) -> str:
    """helm (built into .cache/bin with the control plane) against the tier's cluster, its state in there."""
    home = cluster.state_dir / "helm"
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), HELM_CACHE_HOME=str(home / "cache"),
               HELM_CONFIG_HOME=str(home / "config"), HELM_DATA_HOME=str(home / "data"))
    res = subprocess.run([str(cluster.bin_dir / "helm"), *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"helm {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="session")
def operator(real_cluster) -> str:
    """The operator in the cluster, as a user installs it: the Helm chart (CRDs, ServiceAccount, RBAC,
    Deployment with probes and metrics) with the locally built image, on the real node. Returns its namespace."""
    started = time.monotonic()
    helm(real_cluster, "install", "elastic-df", str(CHART), "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
         "--set", "operator.image.pullPolicy=Never", "--set", "operator.resyncSeconds=2",
         "--set-string", r"operator.nodeSelector.elasticdf\.io/dev-runtime=real",  # devcluster.LABEL_DEV_RUNTIME
         "--wait", "--timeout", "5m")
    print(f"helm install (operator pod Ready): {time.monotonic() - started:.1f}s")
    return OPERATOR_NAMESPACE


@pytest.fixture(scope="module")
def builds_operator(real_cluster, operator, core_v1) -> str:
    """The installed operator with card builds on (chart values builds.*): the dev cluster's registry
    (devcluster.BUILD_REGISTRY, plain http inside the cluster), builder pods on the real node. Turned off
    again afterwards, so the other modules' resources run without builds."""
    node = r"builds.nodeSelector.elasticdf\.io/dev-runtime=real"  # devcluster.LABEL_DEV_RUNTIME
    helm(real_cluster, "upgrade", "elastic-df", str(CHART), "--namespace", operator, "--reuse-values",
         "--set", f"builds.registry={devcluster.BUILD_REGISTRY}", "--set", "builds.insecure=true",
         "--set-string", node, "--set", "builds.timeoutSeconds=900", "--wait", "--timeout", "5m")
    only_new_operator_pods(core_v1, operator)
    yield operator
    helm(real_cluster, "upgrade", "elastic-df", str(CHART), "--namespace", operator, "--reuse-values",
         "--set", "builds.registry=", "--wait", "--timeout", "5m")
    only_new_operator_pods(core_v1, operator)


def only_new_operator_pods(core_v1, namespace: str) -> None:
    """helm --wait returns once the new operator pods are Ready, but a pod of the old ReplicaSet may still be
    terminating, and as the leader it reconciles with the old values until it exits: wait until it is gone."""
    selector = "app.kubernetes.io/component=operator"

    def settled() -> bool:
        pods = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
        hashes = {p.metadata.labels.get("pod-template-hash") for p in pods}
        return len(hashes) == 1 and not any(p.metadata.deletion_timestamp for p in pods)
    wait_until(settled, 180, "only the upgraded operator's pods", interval=1)
