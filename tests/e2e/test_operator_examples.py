"""The shipped examples deploy the CLI's plan (real control plane, kwok Alveo nodes): MobileNetV1 on 2 x U280
and ResNet-50 on the mixed rack predict exactly the fps of `elasticdf plan` on the same cards, with one pod
per card and every hosted segment wired to where the next one listens; and an operator killed in the middle
of a reconcile leaves no duplicate and no orphan."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cardpods import (
    GROUP,
    PLURAL,
    VERSION,
    card_pods,
    check_card_pods,
    check_no_double_booking,
    ei,
    pool_nodes,
    serving,
    status,
)
from elasticdf_operator.local import local_operator

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FLAGS = ("--metrics-port", "0", "--resync-seconds", "2")


def cli_plan(model: str, cluster: Path, tmp_path: Path) -> dict:
    out = tmp_path / f"{model}-plan.json"
    subprocess.run([sys.executable, "-m", "elasticdf_partitioner.cli", "plan", "--model", model, "--cluster",
                    str(cluster), "--json", str(out)], check=True, capture_output=True, timeout=300)
    return json.loads(out.read_text())


def example(name: str, replicas: int, placement: dict) -> dict:
    body = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    body["spec"].update(replicas=replicas, placement=placement)
    return body


def fabric_of(cluster: dict, prefix: str) -> dict:
    """A Fabric describing the cluster file's switches under the pool's (unique) switch names."""
    switches = [{"name": f"{prefix}-{s['name']}", "uplinkGbps": s["uplink_gbps"],
                 **({"to": f"{prefix}-{s['to']}"} if s.get("to") else {})} for s in cluster.get("switches", [])]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Fabric", "metadata": {"name": f"e2e-{prefix}"},
            "spec": {"switches": switches}}


@pytest.mark.parametrize("model, cluster_file", [("mobilenetv1", "2xU280.yaml"), ("resnet50", "mixed-rack.yaml")])
def test_example_deploys_the_cli_plan(kubeconfig, crds, custom, core_v1, namespace, pool, wait_for, tmp_path,
                                      model, cluster_file):
    cluster = yaml.safe_load((EXAMPLES / "clusters" / cluster_file).read_text())
    plan = cli_plan(model, EXAMPLES / "clusters" / cluster_file, tmp_path)
    placement = pool(*({"cards": n["cards"], "switch": n.get("switch", "leaf")} for n in cluster["nodes"]))
    prefix = placement["nodeSelector"]["e2e.elasticdf.io/pool"]
    fabric = fabric_of(cluster, prefix)
    if fabric["spec"]["switches"]:
        custom.create_cluster_custom_object(GROUP, VERSION, "fabrics", fabric)
    replicas = len(plan["instances"])
    try:
        with local_operator(kubeconfig, *FLAGS, log=tmp_path / "operator.log"):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                   example(model, replicas, placement))
            wait_for(lambda: serving(core_v1, custom, namespace, model, replicas), 300, f"{model}: all instances")
            recs = check_card_pods(core_v1, namespace, model)
    finally:
        if fabric["spec"]["switches"]:
            custom.delete_cluster_custom_object(GROUP, VERSION, "fabrics", fabric["metadata"]["name"])
    st = status(custom, namespace, model)
    assert st["predictedFPS"] == pytest.approx(plan["total_fps"], abs=0.01), "operator fps = CLI plan fps"
    assert st["standbyReplicas"] == 0 and st["plan"]["cardsUsed"] == plan["cards_used"]
    renamed = {n["name"]: node for n, node in zip(cluster["nodes"], pool_nodes(placement, len(cluster["nodes"])))}
    planned = {(renamed[s["node"]], s["card"]) for i in plan["instances"] for s in i["segments"]}
    assert {(c.node, c.card) for g in recs for c in g.cards} == planned, "one pod on each card the plan uses"
    assert len(card_pods(core_v1, namespace, model)) == plan["cards_used"]


def test_operator_killed_mid_reconcile_leaves_no_duplicates_or_orphans(kubeconfig, crds, custom, core_v1,
                                                                       namespace, pool, wait_for, tmp_path):
    # MobileNetV1 on six U280s: groups of pairs of cards with 4 instances each, so 12 replicas are 3 groups: 3
    # ConfigMaps and 6 card pods in a row
    placement = pool(["u280", "u280"], ["u280", "u280"], ["u280", "u280"])
    body = ei("crash", "mobilenetv1", replicas=12, placement=placement)
    with local_operator(kubeconfig, *FLAGS, log=tmp_path / "first.log") as first:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        deadline = time.monotonic() + 120
        while not card_pods(core_v1, namespace, "crash") and time.monotonic() < deadline:
            time.sleep(0.01)
        first.kill()  # SIGKILL as soon as the first card pod exists: the reconcile is still creating the others
        first.wait()
    created_before_kill = len(card_pods(core_v1, namespace, "crash"))
    with local_operator(kubeconfig, *FLAGS, log=tmp_path / "second.log"):
        wait_for(lambda: serving(core_v1, custom, namespace, "crash", 12), 120, "12 instances after the restart")
        time.sleep(3)  # a few more resyncs: nothing may be added
        recs = check_card_pods(core_v1, namespace, "crash")
    print(f"card pods when killed: {created_before_kill}, after restart: {sum(len(g.cards) for g in recs)}")
    assert sum(len(g.instances) for g in recs) == 12, "no duplicate instances"
    check_no_double_booking(core_v1, namespace, dict.fromkeys(pool_nodes(placement, 3), 2))
