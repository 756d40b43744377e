"""Cluster YAML (DESIGN §5.2) -> kwok-managed Alveo nodes: the pure mapping, and the
`dev-cluster.sh nodes` command against the real control plane (apply semantics, --prune)."""

from __future__ import annotations

import subprocess
import sys

import devcluster
import pytest
import yaml

CATALOG = devcluster.load_card_catalog()
U280 = CATALOG["u280"].device_plugin_resource
U200 = CATALOG["u200"].device_plugin_resource


def test_manifest_labels_capacity_and_addresses():
    doc = {"nodes": [
        {"name": "alveo-0", "cards": ["u280", "u280"], "switch": "leaf-a"},
        {"name": "alveo-1", "cards": ["U280", "u200"], "cpu": 64, "address": "10.240.7.7"},
    ]}
    first, second = devcluster.node_manifests(doc, CATALOG)
    assert first["metadata"]["labels"]["elasticdf.io/card-types"] == "u280"
    assert first["metadata"]["labels"]["elasticdf.io/switch"] == "leaf-a"
    assert first["metadata"]["labels"]["type"] == "kwok"
    assert first["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake", "elasticdf.io/cards": "u280,u280"}
    assert first["status"]["capacity"][U280] == "2"
    assert first["status"]["allocatable"] == first["status"]["capacity"]
    assert U280.startswith("amd.com/xilinx_u280_")
    assert second["metadata"]["labels"]["elasticdf.io/card-types"] == "u200.u280"
    assert "elasticdf.io/switch" not in second["metadata"]["labels"]
    assert second["status"]["capacity"] == {"cpu": "64", "memory": "256Gi", "pods": "110", U200: "1", U280: "1"}
    assert {"type": "InternalIP", "address": "10.240.7.7"} in second["status"]["addresses"]
    assert {"type": "InternalIP", "address": "10.240.0.10"} in first["status"]["addresses"]


@pytest.mark.parametrize("doc, message", [
    ({}, "non-empty 'nodes'"),
    ({"nodes": [{"name": "Bad_Name", "cards": []}]}, "DNS-1123"),
    ({"nodes": [{"name": "a", "cards": ["k80"]}]}, "unknown card type 'k80'"),
    ({"nodes": [{"name": "a"}, {"name": "a"}]}, "listed twice"),
    ({"nodes": [{"name": "a", "switch": "leaf a"}]}, "not a valid label value"),
    ({"nodes": [{"name": "a", "address": "192.168.1.1"}]}, "fake node network"),
    ({"nodes": [{"name": "a", "runtime": "docker"}]}, r"nodes\[0\] \(a\): runtime 'docker' is not one of kwok, real"),
])
def test_invalid_cluster_files_are_refused(doc, message):
    with pytest.raises(devcluster.ClusterError, match=message):
        devcluster.node_manifests(doc, CATALOG)


def test_real_nodes_are_no_kwok_nodes():
    doc = {"nodes": [{"name": "sim", "cards": ["u280"]},
                     {"name": "real", "cards": ["u250", "u280", "u250"], "runtime": "real", "switch": "leaf-a"}]}
    assert [m["metadata"]["name"] for m in devcluster.node_manifests(doc, CATALOG)] == ["sim"]
    real = devcluster.parse_nodes(doc, CATALOG)[1]
    assert real.labels["elasticdf.io/dev-runtime"] == "real" and "type" not in real.labels
    assert real.labels["elasticdf.io/card-types"] == "u250.u280"
    assert real.annotations == {"elasticdf.io/cards": "u250,u280,u250"}, "no kwok annotation: kwok leaves it alone"
    assert real.resources == [CATALOG[c].device_plugin_resource for c in ("u250", "u280", "u250")]


@pytest.mark.e2e
def test_nodes_command_applies_and_prunes(control_plane, core_v1, simulated_nodes, baseline_cluster, tmp_path):
    def nodes_cmd(doc: dict, *extra: str) -> None:
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(doc))
        res = subprocess.run(
            [sys.executable, str(devcluster.HACK / "devcluster.py"), "--state-dir", str(control_plane.state_dir),
             "--kubeconfig", str(control_plane.kubeconfig), "nodes", str(path), *extra],
            capture_output=True, text=True, timeout=120,
        )
        assert res.returncode == 0, res.stderr

    extra_node = {"name": "cli-node", "cards": ["u280", "u200"], "switch": "leaf-c"}
    nodes_cmd({"nodes": [*baseline_cluster["nodes"], extra_node]})
    node = core_v1.read_node("cli-node")
    assert node.metadata.labels["elasticdf.io/card-types"] == "u200.u280"
    assert node.status.allocatable[U280] == "1" and node.status.allocatable[U200] == "1"
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)

    # apply again with other cards and no switch: labels and capacity follow, the stale resource goes
    nodes_cmd({"nodes": [*baseline_cluster["nodes"], {"name": "cli-node", "cards": ["u280"] * 3}]})
    node = core_v1.read_node("cli-node")
    assert node.metadata.labels["elasticdf.io/card-types"] == "u280"
    assert "elasticdf.io/switch" not in node.metadata.labels
    assert node.status.capacity[U280] == "3" and U200 not in node.status.capacity

    # --prune removes simulated nodes that the file no longer lists, and only those
    nodes_cmd(baseline_cluster, "--prune")
    names = {n.metadata.name for n in core_v1.list_node().items}
    assert "cli-node" not in names and set(simulated_nodes) <= names
