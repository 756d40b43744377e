"""The shipped examples end to end, and an operator killed in the middle of a reconcile (real control plane)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from elasticdf_operator.local import local_operator
from test_operator import GROUP, PLURAL, VERSION, check_pods, ei, segment_pods
from test_operator_faults import check_no_double_booking, live

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FLAGS = ("--metrics-port", "0", "--resync-seconds", "2")


def example(name: str, placement: dict) -> dict:
    body = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    body["spec"]["placement"] = {**body["spec"].get("placement", {}), **placement}
    return body


def ready(custom, ns, name) -> bool:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    status = obj.get("status") or {}
    return status.get("readyReplicas") == obj["spec"]["replicas"] and status.get("replicas") == obj["spec"]["replicas"]


def test_both_examples_run_on_their_planned_nodes(kubeconfig, crds, custom, core_v1, namespace, pool, wait_for,
                                                  tmp_path):
    placement = pool(["u280", "u280"], ["u280", "u280"], ["u250", "u250"], ["u250", "u250"], ["u280", "u250"])
    with local_operator(kubeconfig, *FLAGS, log=tmp_path / "operator.log"):
        for name in ("resnet50", "mobilenetv1"):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, example(name, placement))
        for name in ("resnet50", "mobilenetv1"):
            wait_for(lambda n=name: ready(custom, namespace, n), 120, f"{name} ready")
            pods = live(segment_pods(core_v1, namespace, name))
            check_pods(core_v1, namespace, pods)
            plan = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)["status"]["plan"]
            planned = {(s["node"], s["card"]) for i in plan["instances"] for s in i["segments"]}
            booked = {tuple(p.metadata.annotations["elasticdf.io/card"].rsplit("/", 1)) for p in pods}
            assert {(node, int(card)) for node, card in booked} == planned, "pods hold exactly the planned cards"
        capacity = {f"{placement['nodeSelector']['elasticdf.io/switch']}-{i}": 2 for i in range(5)}
        check_no_double_booking(core_v1, namespace, capacity)


def test_operator_killed_mid_reconcile_leaves_no_duplicates_or_orphans(kubeconfig, crds, custom, core_v1,
                                                                       namespace, pool, wait_for, tmp_path):
    placement = pool(["u280", "u280"], ["u280", "u280"], ["u280", "u280"])
    body = ei("crash", replicas=3, placement=placement)
    with local_operator(kubeconfig, *FLAGS, log=tmp_path / "first.log") as first:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        deadline = time.monotonic() + 60
        while not segment_pods(core_v1, namespace, "crash") and time.monotonic() < deadline:
            time.sleep(0.01)
        first.kill()  # SIGKILL as soon as the first pod exists: the reconcile is still creating the others
        first.wait()
    created_before_kill = len(segment_pods(core_v1, namespace, "crash"))
    with local_operator(kubeconfig, *FLAGS, log=tmp_path / "second.log"):
        wait_for(lambda: ready(custom, namespace, "crash"), 90, "3 instances ready after the restart")
        time.sleep(3)  # a few more resyncs: nothing may be added
        pods = live(segment_pods(core_v1, namespace, "crash"))
    print(f"pods when killed: {created_before_kill}, after restart: {len(pods)}")
    check_pods(core_v1, namespace, pods)
    instances = {p.metadata.labels["elasticdf.io/instance"] for p in pods}
    assert len(instances) == 3, f"exactly 3 instances, got {sorted(instances)}"
    configmaps = core_v1.list_namespaced_config_map(namespace, label_selector="elasticdf.io/name=crash").items
    wired = {cm.metadata.labels.get("elasticdf.io/instance") for cm in configmaps} - {None}
    assert wired == instances, f"orphan or missing instance ConfigMaps: {sorted(wired)} vs {sorted(instances)}"
    check_no_double_booking(core_v1, namespace, {f"{placement['nodeSelector']['elasticdf.io/switch']}-{i}": 2
                                                 for i in range(3)})
