"""The operator against the real local control plane (kwok Alveo nodes): apply, scale inside a card group and
beyond it, infeasible and invalid specs, restart, and a name as long as the API server allows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cardpods import (
    GROUP,
    PLURAL,
    VERSION,
    card_pods,
    check_card_pods,
    condition,
    ei,
    groups,
    per_card,
    pool_nodes,
    serving,
    status,
    uids,
)
from elasticdf_contract.names import gateway_name, label_value
from elasticdf_operator.local import local_operator

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def operator(kubeconfig, crds, simulated_nodes, tmp_path_factory):
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with local_operator(kubeconfig, "--metrics-port", "0", "--resync-seconds", "2", log=log) as proc:
        yield proc
    print(log.read_text()[-4000:])


def scale(custom, ns: str, name: str, replicas: int) -> None:
    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, ns, PLURAL, name, {"spec": {"replicas": replicas}})


def test_scale_inside_a_group_moves_no_pod_and_beyond_adds_a_group(operator, custom, core_v1, namespace, pool,
                                                                   wait_for):
    # CNV on two U280: the plan puts k instances on each card, so each card is a group of k (MobileNetV1's best
    # group there is the pair of cards)
    k = per_card("cnv", "u280")
    placement = pool(["u280"], ["u280"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           ei("mnv", "cnv", replicas=1, placement=placement))
    wait_for(lambda: serving(core_v1, custom, namespace, "mnv", 1), 90, "1 instance serving")
    (g0,) = check_card_pods(core_v1, namespace, "mnv")
    assert k >= 2 and len(g0.instances) == k and len(g0.cards) == 1
    assert status(custom, namespace, "mnv")["standbyReplicas"] == k - 1, "the card's other instances stand by"
    first = uids(core_v1, namespace, "mnv")
    wait_for(lambda: (condition(custom, namespace, "mnv", "Ready") or {}).get("status") == "True", 30, "Ready")

    scale(custom, namespace, "mnv", k)  # inside the placed group: standby instances become active
    wait_for(lambda: serving(core_v1, custom, namespace, "mnv", k), 30, f"{k} instances serving")
    assert uids(core_v1, namespace, "mnv") == first, "activating standby instances moved no pod"
    assert status(custom, namespace, "mnv")["standbyReplicas"] == 0

    scale(custom, namespace, "mnv", k + 1)  # beyond it: a second group on the other card
    wait_for(lambda: serving(core_v1, custom, namespace, "mnv", k + 1), 60, f"{k + 1} instances serving")
    recs = check_card_pods(core_v1, namespace, "mnv")
    assert [g.index for g in recs] == [0, 1] and {(c.node, c.card) for g in recs for c in g.cards} == {
        (node, 0) for node in pool_nodes(placement, 2)}
    after = uids(core_v1, namespace, "mnv")
    assert {n: after[n] for n in first} == first and len(after) == 2, "the first card pod stayed"
    st = status(custom, namespace, "mnv")
    assert st["standbyReplicas"] == k - 1 and st["predictedFPS"] == pytest.approx(
        sum(i["fps"] for i in st["plan"]["instances"] if not i["standby"]), abs=0.01)
    sc = custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "mnv")
    assert sc["status"]["replicas"] == k + 1 and "elasticdf.io/name=mnv" in sc["status"]["selector"]

    scale(custom, namespace, "mnv", 1)  # manual scale-down: the idle second group is released at once
    wait_for(lambda: uids(core_v1, namespace, "mnv") == first and serving(core_v1, custom, namespace, "mnv", 1), 60,
             "back to the first card only")
    assert [g.index for g in groups(core_v1, namespace, "mnv")] == [0]


def test_infeasible_spec_reports_condition_and_event(operator, custom, core_v1, namespace, wait_for):
    body = ei("huge", objective="latency", placement={"cardTypes": ["u200"]})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    cond = wait_for(lambda: condition(custom, namespace, "huge", "Ready"), 60, "a Ready condition")
    assert cond["status"] == "False" and cond["reason"] in ("InsufficientCards", "PartitionInfeasible")

    def warned():
        events = core_v1.list_namespaced_event(namespace).items
        return [e for e in events if e.involved_object.name == "huge" and e.type == "Warning"]

    assert wait_for(warned, 30, "a Warning event")[0].reason in ("InsufficientCards", "PartitionInfeasible")


@pytest.mark.parametrize("spec, field", [
    ({"objective": "fastest"}, "spec.objective"),
    ({"replicas": -1}, "spec.replicas"),
    ({"targetFPS": 0}, "spec.targetFPS"),
    ({"placement": {"cardTypes": ["u999"]}}, "spec.placement.cardTypes"),
    ({"runtime": {"mode": "fpga"}}, "spec.runtime.mode"),
    ({"autoscaling": {"maxReplicas": 2, "minReplicas": 3, "targetFPS": 1}}, "spec.autoscaling"),
    ({"model": {"name": "cnv", "artifacts": {"onnx": "s3://x"}}}, "spec.model"),
])
def test_invalid_specs_are_rejected_naming_the_field(crds, custom, namespace, spec, field):
    from kubernetes.client.rest import ApiException

    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("bad", **spec))
    assert err.value.status == 422
    assert field in err.value.body


def test_partition_infeasible_carries_the_partitioner_message(operator, custom, core_v1, namespace, wait_for):
    # 0.1 % of every SLR: no CNV layer fits (1 % did until the fast mode learnt to choose options per SLR:
    # the slowest CNV then fits over a U280's three SLRs)
    tiny = dict.fromkeys(("lut", "ff", "bram18", "uram", "dsp", "memorydspmean"), 0.001)
    tiny["memory_dsp_mean"] = tiny.pop("memorydspmean")
    body = ei("tight", placement={"limits": tiny})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    cond = wait_for(lambda: condition(custom, namespace, "tight", "PartitionSolved"), 60, "PartitionSolved")
    assert cond["status"] == "False" and cond["reason"] == "PartitionInfeasible"
    # which resource is short, where, and by how much
    assert "does not fit any SLR" in cond["message"] and "short by {'uram'" in cond["message"]
    assert "the roomiest SLR (" in cond["message"]
    events = wait_for(lambda: [e for e in core_v1.list_namespaced_event(namespace).items
                               if e.involved_object.name == "tight" and e.reason == "PartitionInfeasible"],
                      30, "a PartitionInfeasible event")
    assert events[0].type == "Warning"
    assert not card_pods(core_v1, namespace, "tight")


# the longest name the API server accepts for an ElasticInference (DNS subdomain: 253 characters, dots allowed)
LONG = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])


def test_a_name_as_long_as_the_api_allows_works_end_to_end(operator, custom, core_v1, k8s_client, namespace, pool,
                                                           wait_for):
    from kubernetes import client

    assert len(LONG) == 253
    placement = pool(["u280"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei(LONG, placement=placement))
    wait_for(lambda: serving(core_v1, custom, namespace, LONG, 1), 60, "the long-named resource serving")
    check_card_pods(core_v1, namespace, LONG)
    gateway = client.AppsV1Api(k8s_client).read_namespaced_deployment(gateway_name(LONG), namespace)
    assert gateway.metadata.labels["elasticdf.io/name"] == label_value(LONG)
    assert (condition(custom, namespace, LONG, "Ready") or {}).get("status") == "True"
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, LONG)
    wait_for(lambda: not card_pods(core_v1, namespace, LONG) and not groups(core_v1, namespace, LONG), 60,
             "its card pods and groups deleted")


# last: it stops the module's operator
def test_a_measured_clock_in_the_fabric_rolls_the_groups_without_leaving_the_rotation_empty(
        operator, custom, core_v1, namespace, pool, wait_for):
    # u55c only (no other test of this module uses it): a Fabric's clocks roll exactly the groups on that card type
    placement = pool(["u55c", "u55c"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           ei("roll", "cnv", replicas=1, placement=placement))
    wait_for(lambda: serving(core_v1, custom, namespace, "roll", 1), 90, "1 instance serving")
    (old,) = groups(core_v1, namespace, "roll")
    fabric = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Fabric", "metadata": {"name": f"clocks-{namespace}"},
              "spec": {"clocks": {"u55c": 260.0}}}
    custom.create_cluster_custom_object(GROUP, VERSION, "fabrics", fabric)
    try:
        seen_serving = []

        def rolled():
            st = status(custom, namespace, "roll")
            seen_serving.append((st.get("readyReplicas"), [(c["type"], c["reason"], c["message"][:80])
                                                           for c in st.get("conditions", [])
                                                           if c["type"] in ("SegmentsReady", "PlanCurrent")]))
            recs = groups(core_v1, namespace, "roll")
            done = [g.index for g in recs] == [1] and (condition(custom, namespace, "roll", "PlanCurrent")
                                                       or {}).get("status") == "True"
            return done and serving(core_v1, custom, namespace, "roll", 1)
        wait_for(rolled, 120, "the new group alone, serving")
        (new,) = groups(core_v1, namespace, "roll")
        assert {b["fclkMhz"] for b in new.builds.values()} == {260.0}
        assert {b["fclkMhz"] for b in old.builds.values()} == {200.0}
        assert new.instances[0]["fps"] == pytest.approx(old.instances[0]["fps"] * 260 / 200, rel=1e-3)
        assert all(ready for ready, _ in seen_serving), f"an instance was ready throughout the roll: {seen_serving}"
        assert status(custom, namespace, "roll")["predictedFPS"] == pytest.approx(new.instances[0]["fps"], abs=0.01)
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "fabrics", fabric["metadata"]["name"])


def test_restart_creates_no_duplicates(operator, kubeconfig, custom, core_v1, namespace, wait_for):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("again"))
    wait_for(lambda: serving(core_v1, custom, namespace, "again", 1), 60, "1 instance serving")
    before = uids(core_v1, namespace, "again")
    operator.terminate()
    operator.wait(20)
    with local_operator(kubeconfig, "--metrics-port", "0", "--resync-seconds", "2"):
        time.sleep(8)
        assert uids(core_v1, namespace, "again") == before
