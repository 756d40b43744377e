"""The operator against the real local control plane (kwok Alveo nodes): apply, scale, infeasible, invalid."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from elasticdf_operator.local import local_operator
from elasticdf_partitioner.wiring import SegmentWiring, check_chain

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "elasticdf.io", "v1alpha1", "elasticinferences"


@pytest.fixture(scope="module")
def operator(kubeconfig, crds, simulated_nodes, tmp_path_factory):
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with local_operator(kubeconfig, "--metrics-port", "0", "--resync-seconds", "2", log=log) as proc:
        yield proc
    print(log.read_text()[-4000:])


def ei(name: str, **spec) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "metadata": {"name": name},
            "spec": {"model": {"name": "cnv"}, **spec}}


def segment_pods(core_v1, ns: str, name: str) -> list:
    return core_v1.list_namespaced_pod(ns, label_selector=f"elasticdf.io/name={name}").items


def running(core_v1, ns, name, n_instances):
    pods = segment_pods(core_v1, ns, name)
    instances = {p.metadata.labels["elasticdf.io/instance"] for p in pods}
    ok = len(instances) == n_instances and all(p.status.phase == "Running" for p in pods)
    return pods if ok else None


def condition(custom, ns, name, type_):
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    for c in (obj.get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None


def check_pods(core_v1, ns, pods):
    by_instance = {}
    for pod in pods:
        cm = core_v1.read_namespaced_config_map(f"{pod.metadata.name.rsplit('-s', 1)[0]}-wiring", ns)
        seg = pod.metadata.labels["elasticdf.io/segment"]
        wiring = SegmentWiring.model_validate_json(cm.data[f"segment-{seg}.json"])
        assert pod.spec.node_name == wiring.node, "pod runs on the planned node"
        limits = pod.spec.containers[0].resources.limits
        assert len(limits) == 1 and list(limits.values()) == ["1"]
        by_instance.setdefault(wiring.instance, []).append(wiring)
    for wirings in by_instance.values():
        assert check_chain(wirings) == []
    cards = [(w.node, w.card) for ws in by_instance.values() for w in ws]
    assert len(cards) == len(set(cards)), f"a card is booked twice: {cards}"


def test_apply_scale_up_and_down(operator, custom, core_v1, namespace, wait_for):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("cnv"))
    pods = wait_for(lambda: running(core_v1, namespace, "cnv", 1), 60, "1 instance running")
    check_pods(core_v1, namespace, pods)
    wait_for(lambda: (condition(custom, namespace, "cnv", "Ready") or {}).get("status") == "True", 30, "Ready")
    first = {p.metadata.uid for p in pods}

    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "cnv", {"spec": {"replicas": 3}})
    pods = wait_for(lambda: running(core_v1, namespace, "cnv", 3), 90, "3 instances running")
    check_pods(core_v1, namespace, pods)
    assert first <= {p.metadata.uid for p in pods}, "scaling up left the first instance alone"
    scale = custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "cnv")
    wait_for(lambda: custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, "cnv")["status"].get("replicas") == 3, 30, "scale status 3")
    assert "elasticdf.io/name=cnv" in scale["status"].get("selector", "elasticdf.io/name=cnv")

    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "cnv", {"spec": {"replicas": 1}})
    wait_for(lambda: {p.metadata.uid for p in segment_pods(core_v1, namespace, "cnv")
                      if not p.metadata.deletion_timestamp} == first, 60, "back to the first instance only")


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
    tiny = dict.fromkeys(("lut", "ff", "bram18", "uram", "dsp", "memorydspmean"), 0.01)
    tiny["memory_dsp_mean"] = tiny.pop("memorydspmean")
    body = ei("tight", placement={"limits": tiny})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    cond = wait_for(lambda: condition(custom, namespace, "tight", "PartitionSolved"), 60, "PartitionSolved")
    assert cond["status"] == "False" and cond["reason"] == "PartitionInfeasible"
    assert "cnv" in cond["message"]
    events = wait_for(lambda: [e for e in core_v1.list_namespaced_event(namespace).items
                               if e.involved_object.name == "tight" and e.reason == "PartitionInfeasible"],
                      30, "a PartitionInfeasible event")
    assert events[0].type == "Warning"
    assert not segment_pods(core_v1, namespace, "tight")


def test_restart_creates_no_duplicates(operator, kubeconfig, custom, core_v1, namespace, wait_for):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("again"))
    pods = wait_for(lambda: running(core_v1, namespace, "again", 1), 60, "1 instance running")
    operator.terminate()
    operator.wait(20)
    with local_operator(kubeconfig, "--metrics-port", "0", "--resync-seconds", "2"):
        time.sleep(8)
        after = segment_pods(core_v1, namespace, "again")
        assert {p.metadata.uid for p in after} == {p.metadata.uid for p in pods}
