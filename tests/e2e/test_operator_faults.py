"""The operator under faults and competition, against the real local control plane (kwok Alveo nodes):
scarce cards shared by two resources, a deleted node, a failed segment pod, deletion with the finalizer,
and the built-in autoscaler fed through the elasticdf.io/observed-fps annotation."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from elasticdf_operator.local import local_operator
from test_operator import GROUP, PLURAL, VERSION, ei, running, segment_pods

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def operator(kubeconfig, crds, tmp_path_factory):
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    flags = ("--metrics-port", "0", "--resync-seconds", "2", "--autoscale-seconds", "0.5")
    with local_operator(kubeconfig, *flags, log=log) as proc:
        yield proc
    print("\n".join(line for line in log.read_text().splitlines() if "succeeded" not in line)[-6000:])


def live(pods):
    return [p for p in pods if not p.metadata.deletion_timestamp and p.status.phase not in ("Succeeded", "Failed")]


def card_of(pod) -> tuple[str, int]:
    node, index = pod.metadata.annotations["elasticdf.io/card"].rsplit("/", 1)
    return node, int(index)


def check_no_double_booking(core_v1, ns, capacity: dict[str, int]) -> int:
    pods = live(core_v1.list_namespaced_pod(ns, label_selector="app.kubernetes.io/managed-by=elasticdf-operator").items)
    per_card = Counter(card_of(p) for p in pods)
    assert all(n == 1 for n in per_card.values()), f"a card runs two segment pods: {per_card}"
    per_node = Counter(node for node, _ in per_card)
    assert all(per_node[n] <= capacity.get(n, 0) for n in per_node), f"more cards than a node has: {per_node}"
    for p in pods:
        if p.spec.node_name:
            assert p.spec.node_name == card_of(p)[0], "pod bound to another node than its card"
    return len(pods)


def test_competing_resources_never_double_book(operator, custom, core_v1, namespace, pool):
    placement = pool(["u280", "u280"], ["u280", "u280"])
    capacity = {f"{placement['nodeSelector']['elasticdf.io/switch']}-{i}": 2 for i in range(2)}
    for name in ("a", "b"):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               ei(name, replicas=3, placement=placement))
    deadline, seen = time.monotonic() + 40, 0
    while time.monotonic() < deadline:
        seen = check_no_double_booking(core_v1, namespace, capacity)  # checked on every sample
        pods = live(segment_pods(core_v1, namespace, "a") + segment_pods(core_v1, namespace, "b"))
        if seen == 4 and all(p.status.phase == "Running" for p in pods):
            break
        time.sleep(0.2)
    assert seen == 4, "the four cards should all be in use"
    time.sleep(3)  # a few more resyncs of both: still nothing booked twice
    assert check_no_double_booking(core_v1, namespace, capacity) == 4


def uids(core_v1, ns, name) -> dict[str, str]:
    return {p.metadata.name: p.metadata.uid for p in live(segment_pods(core_v1, ns, name))}


def test_node_deleted_moves_only_its_instances(operator, custom, core_v1, namespace, pool, wait_for):
    placement = pool(["u280"], ["u280"], ["u280"], ["u280"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("a", replicas=2, placement=placement))
    wait_for(lambda: running(core_v1, namespace, "a", 2), 60, "a: 2 instances running")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("b", replicas=1, placement=placement))
    wait_for(lambda: running(core_v1, namespace, "b", 1), 60, "b: 1 instance running")
    a_before, b_before = uids(core_v1, namespace, "a"), uids(core_v1, namespace, "b")
    victim_pod = next(p for p in segment_pods(core_v1, namespace, "a")
                      if p.metadata.labels["elasticdf.io/instance"] == "0")
    victim = victim_pod.spec.node_name
    core_v1.delete_node(victim)

    def moved():
        pods = running(core_v1, namespace, "a", 2)
        return pods if pods and victim not in {p.spec.node_name for p in pods} and len(pods) == 2 else None

    pods = wait_for(moved, 60, f"a's instance on {victim} re-planned onto the free node")
    assert {p.metadata.name for p in pods} == set(a_before)
    moved_names = {n for n, u in uids(core_v1, namespace, "a").items() if a_before[n] != u}
    assert moved_names == {victim_pod.metadata.name}, "only the instance on the deleted node was re-planned"
    assert uids(core_v1, namespace, "b") == b_before, "b had nothing on that node and was not touched"
    events = core_v1.list_namespaced_event(namespace).items
    assert any(e.reason == "InstanceReplanned" and e.involved_object.name == "a" for e in events)


def test_failed_segment_pod_is_replaced(operator, custom, core_v1, namespace, pool, wait_for):
    placement = pool(["u280"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("f", placement=placement))
    (pod,) = wait_for(lambda: running(core_v1, namespace, "f", 1), 60, "1 instance running")
    core_v1.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {"phase": "Failed"}})

    def replaced():
        pods = [p for p in segment_pods(core_v1, namespace, "f") if p.metadata.uid != pod.metadata.uid]
        return pods if len(pods) == 1 and pods[0].status.phase == "Running" else None

    (new,) = wait_for(replaced, 30, "a Running replacement of the failed pod")
    assert new.metadata.name == pod.metadata.name and card_of(new) == card_of(pod)


def test_deletion_cleans_up_through_the_finalizer(operator, custom, core_v1, namespace, pool, wait_for):
    placement = pool(["u280"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("gone", placement=placement))
    wait_for(lambda: running(core_v1, namespace, "gone", 1), 60, "1 instance running")
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")
    assert "elasticdf.io/finalizer" in obj["metadata"].get("finalizers", [])
    # Orphan: the garbage collector would leave the dependents; only the finalizer cleans them up
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone",
                                           body={"propagationPolicy": "Orphan"})
    sel = "elasticdf.io/name=gone"

    def clean():
        left = core_v1.list_namespaced_pod(namespace, label_selector=sel).items
        left += core_v1.list_namespaced_config_map(namespace, label_selector=sel).items
        left += core_v1.list_namespaced_service(namespace, label_selector=sel).items
        return not left

    wait_for(clean, 30, "pods, ConfigMaps and Services deleted")
    wait_for(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"], 30,
             "the ElasticInference gone (finalizer removed)")


def test_autoscaler_follows_observed_fps_with_windows(operator, custom, core_v1, namespace, pool, wait_for):
    placement = pool(["u280"], ["u280"], ["u280"])
    up, down = 2, 5
    body = ei("auto", replicas=1, placement=placement, autoscaling={
        "minReplicas": 1, "maxReplicas": 3, "targetFPS": 1000,
        "scaleUpStabilizationSeconds": up, "scaleDownStabilizationSeconds": down})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_for(lambda: running(core_v1, namespace, "auto", 1), 60, "1 instance running")

    def annotate(fps):
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "auto",
                                              {"metadata": {"annotations": {"elasticdf.io/observed-fps": str(fps)}}})
        return time.monotonic()

    def replicas():
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "auto")["spec"]["replicas"]

    started = annotate(2500)
    wait_for(lambda: replicas() == 3, 30, "scaled up to 3")
    assert time.monotonic() - started >= up - 0.1, "scaled up within the scale-up window"
    wait_for(lambda: running(core_v1, namespace, "auto", 3), 60, "3 instances running")
    status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "auto")["status"]
    assert status["observedFPS"] == 2500

    started = annotate(500)
    wait_for(lambda: replicas() == 1, 30, "scaled down to 1")
    assert time.monotonic() - started >= down - 0.6, "scaled down within the scale-down window"
    wait_for(lambda: len({p.metadata.labels["elasticdf.io/instance"]
                          for p in live(segment_pods(core_v1, namespace, "auto"))}) == 1, 30, "1 instance left")
    events = core_v1.list_namespaced_event(namespace).items
    assert [e.reason for e in events if e.involved_object.name == "auto"].count("Scaled") >= 2
