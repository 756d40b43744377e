"""decide (pure): spec + snapshot -> actions. No API at all: the snapshot is plain data, and the 'apply' step
below only turns Create actions into snapshot entries the way the API server would answer them."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from elasticdf_contract.names import ANNOTATION_CARD, card_pod_name, dns_label, label_value
from elasticdf_contract.wiring import check_chain
from elasticdf_operator import builders, inventory
from elasticdf_operator.api import ElasticInferenceSpec
from elasticdf_operator.buildjobs import BuildsSeen
from elasticdf_operator.decide import (
    Apply,
    Create,
    Decision,
    DeleteGroup,
    Emit,
    GroupRecord,
    MarkIdle,
    Settings,
    decide,
)
from elasticdf_operator.state import Observed
from elasticdf_operator.status import build_status
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_partitioner.cli import usable_capacity
from elasticdf_partitioner.cluster import ClusterSpec, NodeSpec, cluster_from_spec
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.zoo import load_model

CATALOG = load_catalog()
OWNER = builders.Owner("net", "ns", "u1")
DEFAULTS = Settings()


def node(name, cards, ready=True, since="2026-01-01T00:00:00Z"):
    alloc = {}
    for c in cards:
        res = CATALOG.card(c).device_plugin_resource
        alloc[res] = str(int(alloc.get(res, 0)) + 1)
    return {"metadata": {"name": name, "labels": {inventory.LABEL_CARD_TYPES: "x"},
                         "annotations": {inventory.ANNOTATION_CARDS: ",".join(cards)}},
            "status": {"allocatable": alloc, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": since}]}}


def spec(replicas=1, model="mobilenetv1", **extra):
    return ElasticInferenceSpec.model_validate({"model": {"name": model}, "replicas": replicas, **extra})


def zoo_graph(source):
    """The operator's model store for zoo names (decide takes the loader as an argument: no I/O here)."""
    return load_model(source.name)


def run(snap: Observed, s, now=1000.0, owner=OWNER, settings=DEFAULTS) -> tuple[Observed, list]:
    snap, decision = step(snap, s, now, owner, settings)
    return snap, decision.actions


def step(snap: Observed, s, now=1000.0, owner=OWNER, settings=DEFAULTS) -> tuple[Observed, Decision]:
    """decide, then record what the API server would hold after the Create/Delete actions."""
    d = decide(owner, s, snap, now, CATALOG, zoo_graph, settings)
    pods, cms = list(snap.pods), list(snap.configmaps)
    for a in d.actions:
        if isinstance(a, Create) and a.obj["kind"] in ("Pod", "ConfigMap"):
            obj = {**a.obj, "metadata": {**a.obj["metadata"], "uid": uuid.uuid4().hex}}
            (pods if obj["kind"] == "Pod" else cms).append(obj)
        if isinstance(a, DeleteGroup):
            pods = [p for p in pods if p["metadata"]["uid"] not in a.pod_uids]
            cms = [c for c in cms if c["metadata"]["uid"] != a.configmap_uid]
        if isinstance(a, MarkIdle):
            for c in cms:
                if c["metadata"]["name"] == a.name:
                    ann = c["metadata"]["annotations"]
                    ann.pop(builders.ANNOTATION_IDLE_SINCE, None)
                    if a.since is not None:
                        ann[builders.ANNOTATION_IDLE_SINCE] = str(a.since)
    return Observed(snap.nodes, pods, cms, snap.fabrics), d


def gateway_instances(actions) -> set[int]:
    cm = next(a.obj for a in actions if isinstance(a, Apply) and a.obj["metadata"]["name"].endswith("wiring"))
    return {int(k.split("-")[1]) for k in cm["data"]}


def cli_plan_fps(nodes: list[tuple[str, list[str]]], model="mobilenetv1") -> float:
    cluster = cluster_from_spec(ClusterSpec(nodes=[NodeSpec(name=n, cards=c) for n, c in nodes]), CATALOG)
    return solve(load_model(model), cluster).total_fps


def test_card_pods_host_the_plan_and_predicted_fps_equals_the_cli_plan():
    snap = Observed([node("a", ["u280", "u280"])], [], [])
    plan_fps = cli_plan_fps([("a", ["u280", "u280"])])
    snap, actions = run(snap, spec(replicas=100))
    groups = [c for c in snap.configmaps]
    planned = sum(i["fps"] for g in groups for i in builders.record_of(g)["instances"])
    assert planned == pytest.approx(plan_fps, rel=1e-3), "the operator deploys the whole CLI plan"
    cards = [p["metadata"]["annotations"][ANNOTATION_CARD] for p in snap.pods]
    assert sorted(cards) == ["a/0", "a/1"], "one pod per card in use"
    instances = {}
    for g in groups:
        for card in builders.card_wirings_of(g):
            ports = [w.listen.port for w in card.segments]
            assert len(set(ports)) == len(ports)
            for w in card.segments:
                instances.setdefault(w.instance, []).append(w)
    assert len(instances) > len(cards), "several instances share the cards"
    assert all(check_chain(ws) == [] for ws in instances.values())


def test_scaling_inside_a_group_moves_no_pod_and_standby_leaves_the_rotation():
    snap = Observed([node("a", ["u280", "u280"])], [], [])
    snap, actions = run(snap, spec(replicas=1))
    (cm,) = snap.configmaps
    held = [i["index"] for i in builders.record_of(cm)["instances"]]
    assert len(held) > 1 and gateway_instances(actions) == {held[0]}
    pods = {p["metadata"]["uid"] for p in snap.pods}
    after, actions = run(snap, spec(replicas=len(held)))
    assert {p["metadata"]["uid"] for p in after.pods} == pods
    assert not [a for a in actions if isinstance(a, Create) and a.obj["kind"] == "Pod"]
    assert gateway_instances(actions) == set(held)


def test_scale_beyond_the_group_adds_a_group_and_an_idle_group_is_released_after_the_window():
    # four cards: MobileNetV1's best group is a pair of U280s (instances over both cards beat each card alone)
    snap = Observed([node(name, ["u280"]) for name in "abcd"], [], [])
    s1 = spec(replicas=1, autoscaling={"minReplicas": 1, "maxReplicas": 9, "targetFPS": 100,
                                       "scaleDownStabilizationSeconds": 60})
    snap, _ = run(snap, s1)
    first = len(builders.record_of(snap.configmaps[0])["instances"])
    s2 = s1.model_copy(update={"replicas": first + 1})
    snap, actions = run(snap, s2)
    assert len(snap.configmaps) == 2 and any(isinstance(a, Emit) and a.reason == "GroupPlaced" for a in actions)
    snap, actions = run(snap, s1, now=1000.0)
    assert any(isinstance(a, MarkIdle) and a.since == 1000.0 for a in actions)
    snap, actions = run(snap, s1, now=1030.0)
    assert len(snap.configmaps) == 2, "released before the scale-down window ended"
    snap, actions = run(snap, s1, now=1061.0)
    assert len(snap.configmaps) == 1 and any(isinstance(a, Emit) and a.reason == "GroupReleased" for a in actions)


def test_node_lost_moves_only_its_groups_and_notready_waits_for_the_grace_period():
    nodes = [node("a", ["u280"]), node("b", ["u280"]), node("c", ["u280"])]
    snap = Observed(nodes, [], [])
    per_card = len(builders.record_of(run(snap, spec(1))[0].configmaps[0])["instances"])
    snap, _ = run(snap, spec(2 * per_card))
    assert len(snap.configmaps) == 2
    on_a = [c for c in snap.configmaps if "a" in {x["node"] for x in builders.cards_of(c)}]
    other = {c["metadata"]["uid"] for c in snap.configmaps} - {c["metadata"]["uid"] for c in on_a}
    notready = [node("a", ["u280"], ready=False, since="1970-01-01T00:16:30Z")] + nodes[1:]  # t=990
    still, _ = run(Observed(notready, snap.pods, snap.configmaps), spec(2 * per_card), now=1000.0,
                   settings=Settings(not_ready_grace_seconds=30))
    assert {c["metadata"]["uid"] for c in still.configmaps} == {c["metadata"]["uid"] for c in snap.configmaps}
    moved, _ = run(Observed(notready, snap.pods, snap.configmaps), spec(2 * per_card), now=1021.0,
                   settings=Settings(not_ready_grace_seconds=30))
    assert other <= {c["metadata"]["uid"] for c in moved.configmaps}, "the other group was touched"
    used = {x["node"] for c in moved.configmaps for x in builders.cards_of(c)}
    assert used == {"b", "c"}


def test_two_resources_never_book_the_same_card():
    snap = Observed([node("a", ["u280", "u280"])], [], [])
    snap, _ = run(snap, spec(1))
    other = builders.Owner("other", "ns", "u2")
    snap, _ = run(snap, spec(1), owner=other)
    cards = [p["metadata"]["annotations"][ANNOTATION_CARD] for p in snap.pods]
    assert sorted(cards) == ["a/0", "a/1"]


def test_xrt_holds_the_group_until_its_build_has_a_bitstream():
    s = spec(1, runtime={"mode": "xrt"})
    snap, actions = run(Observed([node("a", ["u280"])], [], []), s)
    assert snap.configmaps and not snap.pods, "cards held, no pod before the build exists"
    (cm,) = snap.configmaps
    digest = next(iter(builders.record_of(cm)["builds"]))
    assert digest.startswith("sha256:")
    with_build = ElasticInferenceSpec.model_validate(
        {"model": {"artifacts": {"onnx": "file:///m.onnx", "bitstreams": {digest: "file:///b.xclbin"}}},
         "replicas": 1, "runtime": {"mode": "xrt"}})
    # the group is keyed by build digest only: the same wiring with the bitstream now known gets its pod
    from elasticdf_operator.decide import Decision, GroupRecord, repair
    d = Decision()
    repair(OWNER, with_build, GroupRecord.parse(cm), {}, Observed([], [], []), CATALOG, d, Settings())
    (pod,) = [a.obj for a in d.actions if isinstance(a, Create)]
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["ELASTICDF_XCLBIN"] == "file:///b.xclbin" and not d.pending_builds


@pytest.mark.parametrize("name", ["a" * 253, "x.y.z-" + "b" * 200, "net", "9lives", "a" * 63])
def test_derived_names_are_valid_for_every_legal_name(name):
    import re

    label = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    for derived in (card_pod_name(name, 12, 3), dns_label(name, "-gateway"), dns_label(name, "-cards"),
                    label_value(name)):
        assert len(derived) <= 63 and label.match(derived), derived
    assert card_pod_name(name, 0, 0) != card_pod_name(name + "x", 0, 0)


def test_scale_down_takes_instances_out_of_the_gateway_first_and_releases_cards_after_the_drain():
    snap = Observed([node(name, ["u280"]) for name in "abcd"], [], [])  # room for two pair groups
    snap, _ = run(snap, spec(replicas=1))
    first = len(builders.record_of(snap.configmaps[0])["instances"])
    snap, _ = run(snap, spec(replicas=first + 1))
    (second,) = [c for c in snap.configmaps if c["metadata"]["labels"][builders.LABEL_GROUP] == "1"]
    second_ids = {w.instance_id for c in builders.card_wirings_of(second) for w in c.segments}
    settings = Settings(gateway_drain_seconds=5.0, gateway_confirm_seconds=60.0)

    snap, actions = run(snap, spec(replicas=1), now=1000.0, settings=settings)
    assert not [a for a in actions if isinstance(a, DeleteGroup)], "no card pod goes in the pass that rewires"
    assert any(isinstance(a, MarkIdle) and a.since == 1000.0 for a in actions)
    assert len(gateway_instances(actions)) == 1, "the gateway's wiring drops the instance at once"
    snap, actions = run(snap, spec(replicas=1), now=1004.0, settings=settings)
    assert len(snap.configmaps) == 2, "kept during the drain period"

    _, actions = run(snap, spec(replicas=1), now=1005.0, settings=settings)
    (release,) = [a for a in actions if isinstance(a, DeleteGroup)]
    assert set(release.unless_served) == second_ids, "released only once no gateway holds its instances"
    _, actions = run(snap, spec(replicas=1), now=1066.0, settings=settings)
    (release,) = [a for a in actions if isinstance(a, DeleteGroup)]
    assert release.unless_served == (), "gateways that never let go hold the cards no longer than the limit"
    _, actions = run(snap, spec(replicas=1), now=1005.0, settings=Settings(ask_gateways=False))
    (release,) = [a for a in actions if isinstance(a, DeleteGroup)]
    assert release.unless_served == (), "gateways that cannot be asked: the drain period alone"


# ---- rolls to a new plan ------------------------------------------------------------------------------


def all_ready(snap: Observed) -> Observed:
    """What the kubelet reports once the card pods run."""
    for p in snap.pods:
        p["spec"]["nodeName"] = "a"
        p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return snap


def fabric_clocks(snap: Observed, **clocks) -> Observed:
    fabric = {"metadata": {"name": "rack"}, "spec": {"clocks": clocks}}
    return Observed(snap.nodes, snap.pods, snap.configmaps, [fabric])


def groups_of(snap: Observed) -> dict[int, dict]:
    return {int(c["metadata"]["labels"][builders.LABEL_GROUP]): builders.record_of(c) for c in snap.configmaps}


NO_ASKING = Settings(ask_gateways=False)


def test_a_measured_clock_rolls_onto_free_cards_while_the_old_group_serves():
    snap = all_ready(run(Observed([node("a", ["u280", "u280"])], [], []), spec(1, "cnv"))[0])
    (old,) = groups_of(snap).values()
    snap, d = step(fabric_clocks(snap, u280=250.0), spec(1, "cnv"), settings=NO_ASKING)
    new = groups_of(snap)[1]
    (old_build,), (new_build,) = old["builds"].values(), new["builds"].values()
    assert (old_build["fclkMhz"], new_build["fclkMhz"]) == (200, 250) and new["plan"] == old["plan"]
    assert d.conditions["PlanCurrent"][:2] == ("False", "Rolling")
    assert new["instances"][0]["fps"] == pytest.approx(old["instances"][0]["fps"] * 250 / 200, rel=1e-3), \
        "same folding, cycles / clock: the clock alone changes the fps"
    assert d.active == {old["instances"][0]["index"]}, "the new group is not ready yet: the old one serves"
    assert gateway_instances(d.actions) == {old["instances"][0]["index"], new["instances"][0]["index"]}, \
        "the new instance is wired already: the gateway checks it and serves from it before the old one leaves"
    snap, d = step(snap, spec(1, "cnv"), now=1020.0, settings=NO_ASKING)  # its card pods take a while
    assert not [a for a in d.actions if isinstance(a, (MarkIdle, DeleteGroup))] and list(groups_of(snap)) == [0, 1], \
        "a new group waiting to take over is standby, never idle: not released"
    snap, d = step(all_ready(snap), spec(1, "cnv"), now=1021.0, settings=NO_ASKING)
    assert gateway_instances(d.actions) == {new["instances"][0]["index"]}, "ready: it takes over the rotation"
    assert any(isinstance(a, MarkIdle) and a.since == 1021.0 for a in d.actions)
    snap, d = step(snap, spec(1, "cnv"), now=1027.0, settings=NO_ASKING)
    assert list(groups_of(snap)) == [1] and d.conditions["PlanCurrent"][:2] == ("True", "Current")


def instance_ids(snap: Observed, group: int) -> set[str]:
    """How the gateways name the instances of group `group`."""
    return set(GroupRecord.parse(next(c for c in snap.configmaps if c["metadata"]["labels"][builders.LABEL_GROUP]
                                      == str(group))).instance_ids())


def test_a_roll_moves_the_rotation_once_the_gateways_serve_the_new_group_and_ready_counts_only_served():
    """Card pods are Ready before the gateways reach their segments (DNS answers a name asked before its pod
    existed from its negative cache for a few seconds): where the gateways were asked, the old group leaves the
    rotation only once they serve the new group, and the status counts an instance ready only once they serve it."""
    s = spec(1, "cnv")
    snap = all_ready(run(Observed([node("a", ["u280", "u280"])], [], []), s)[0])
    ei = {"metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "generation": 1}, "spec": {}}
    _, d = step(snap, s)
    assert build_status(ei, OWNER, 1, snap.configmaps, snap.pods, d, {"name": "cnv"}, serving=set()).ready_replicas \
        == 0, "card pods Ready, no gateway serves it yet: not ready"
    old = instance_ids(snap, 0)
    assert build_status(ei, OWNER, 1, snap.configmaps, snap.pods, d, {"name": "cnv"}, serving=old).ready_replicas == 1
    snap, d = step(dataclasses.replace(fabric_clocks(snap, u280=250.0), serving=old), s, settings=NO_ASKING)
    new = instance_ids(snap, 1)
    snap, d = step(dataclasses.replace(all_ready(snap), serving=old), s, now=1020.0, settings=NO_ASKING)
    assert len(gateway_instances(d.actions)) == 2 and not any(isinstance(a, MarkIdle) for a in d.actions), \
        "the new group's card pods are Ready, but the gateways have its instance down: the old one serves on"
    snap, d = step(dataclasses.replace(all_ready(snap), serving=old | new), s, now=1021.0, settings=NO_ASKING)
    assert gateway_instances(d.actions) == {groups_of(snap)[1]["instances"][0]["index"]}, "served: it takes over"
    assert any(isinstance(a, MarkIdle) and a.since == 1021.0 for a in d.actions)


def test_without_free_cards_one_old_group_at_a_time_makes_room_while_another_serves():
    one = all_ready(run(Observed([node("a", ["u280", "u280"])], [], []), spec(1, "cnv"))[0])
    per_card = len(groups_of(one)[0]["instances"])
    s = spec(2 * per_card, "cnv")
    snap = all_ready(run(Observed([node("a", ["u280", "u280"])], [], []), s)[0])
    assert len(groups_of(snap)) == 2
    snap = fabric_clocks(snap, u280=250.0)
    now, served = 1000.0, []
    for _ in range(12):
        snap, d = step(all_ready(snap), s, now=now, settings=NO_ASKING)
        served.append(len(gateway_instances(d.actions)))
        now += 6.0
    assert min(served) >= per_card, "never fewer than one card's instances in the rotation"
    assert {g["plan"] for g in groups_of(snap).values()} == {d.conditions["PlanCurrent"][2].split("inputs ")[1][:16]}
    assert d.conditions["PlanCurrent"][0] == "True" and served[-1] == 2 * per_card


def test_a_lone_group_without_free_cards_blocks_the_roll_unless_builds_best():
    snap = all_ready(run(Observed([node("a", ["u280"])], [], []), spec(1, "cnv"))[0])
    snap = fabric_clocks(snap, u280=250.0)
    _, d = step(snap, spec(1, "cnv"), settings=NO_ASKING)
    assert d.conditions["PlanCurrent"][:2] == ("False", "RollBlocked") and gateway_instances(d.actions)
    assert not any(isinstance(a, MarkIdle) for a in d.actions), "the only serving group stays"
    _, d = step(snap, spec(1, "cnv", builds="best"), settings=NO_ASKING)
    assert any(isinstance(a, MarkIdle) for a in d.actions), "best: the old plan leaves at once"


def test_scaling_is_no_new_plan_a_spec_change_is_and_an_unknown_clock_card_type_is_reported():
    snap = all_ready(run(Observed([node("a", ["u280", "u280"])], [], []), spec(1, "cnv"))[0])
    snap = Observed(snap.nodes, snap.pods, snap.configmaps, [{"metadata": {"name": "rack"},
                                                              "spec": {"clocks": {"u999": 300.0}}}])
    _, d = step(snap, spec(2, "cnv"))
    assert d.conditions["PlanCurrent"][0] == "True"
    _, d = step(snap, spec(2, "cnv", minInstanceFPS=1000.0))
    assert d.conditions["PlanCurrent"][:2] == ("False", "Rolling"), "a new latency floor is a new plan"
    (warning,) = [a for a in d.actions if isinstance(a, Emit) and a.reason == "InvalidFabric"]
    assert "u999" in warning.message and "u280" in warning.message


def test_a_build_reporting_a_lower_clock_changes_fps_and_later_plans_never_the_builds():
    """Vitis lowers the clock where timing does not close: the cards run at what their build reports. The status
    and the next placements use that clock; new groups still target the clock the build was made for, so they run
    the same build (no rebuild) and nothing rolls."""
    snap = all_ready(run(Observed([node("a", ["u280", "u280"])], [], []), spec(1, "cnv"))[0])
    (old,) = groups_of(snap).values()
    (digest,) = old["builds"]
    more = spec(len(old["instances"]) + 1, "cnv")
    seen = BuildsSeen(manifests={digest: "sha256:" + "0" * 64}, clocks={digest: 180.0})
    snap, d = step(dataclasses.replace(snap, builds=seen), more)
    new = groups_of(snap)[1]
    assert set(new["builds"]) == {digest} and new["builds"][digest]["fclkMhz"] == 200, "made for 200 MHz"
    assert new["instances"][0]["fps"] == pytest.approx(old["instances"][0]["fps"] * 180 / 200, rel=1e-3)
    assert d.conditions["PlanCurrent"][:2] == ("True", "Current")
    card = d.catalog.cards["u280"]
    assert (card.fclk_mhz, card.build_clock_mhz) == (180, 200) and digest[:19] in card.fclk_source
    ei = {"metadata": {"generation": 1}, "spec": {"objective": "throughput"}}
    status = build_status(ei, OWNER, more.replicas, snap.configmaps, snap.pods, d, {"name": "cnv"}, seen)
    by_group = {g.index: g.predicted_fps for g in status.plan.groups}
    assert by_group[0] == pytest.approx(sum(i["fps"] for i in old["instances"]) * 180 / 200, rel=1e-3), \
        "the group placed before the report runs at the reported clock too"
    assert by_group[1] == pytest.approx(sum(i["fps"] for i in new["instances"]), rel=1e-3)
    assert status.plan.clocks["u280"].mhz == 180


def test_resources_a_build_reports_above_the_estimate_shrink_later_placements_not_the_placed_groups():
    """Vivado placed 30 % more LUTs than the cost model estimated: later groups on that card type are planned with
    capacity / 1.3 (as if every estimate were 30 % higher); the group already placed keeps its proven build."""
    snap = all_ready(run(Observed([node("a", ["u280", "u280"])], [], []), spec(1, "cnv"))[0])
    (old,) = groups_of(snap).values()
    ((digest, build),) = old["builds"].items()
    used = {**build["resources"], "LUT": round(build["resources"]["LUT"] * 1.3, 1)}
    more = spec(len(old["instances"]) + 1, "cnv")
    seen = BuildsSeen(manifests={digest: "sha256:" + "0" * 64}, resources={digest: used})
    snap, d = step(dataclasses.replace(snap, builds=seen), more)
    assert {t: c.resource_scale for t, c in d.catalog.cards.items() if c.resource_scale} == \
        {"u280": {"lut": pytest.approx(1.3, abs=1e-3)}}
    assert d.conditions["PlanCurrent"][:2] == ("True", "Current") and digest in groups_of(snap)[0]["builds"]
    ((new_digest, new_build),) = groups_of(snap)[1]["builds"].items()
    usable = usable_capacity(CATALOG.card("u280"), CATALOG).as_dict()["lut"]
    assert build["resources"]["LUT"] * 1.3 > usable >= new_build["resources"]["LUT"] * 1.3, \
        "the placed build would not fit at the reported ratio; the new group's does"
    assert new_digest != digest
