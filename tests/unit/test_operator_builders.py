"""Unit tests of the operator's pure parts: CRD generation, inventory, builders, status."""

from __future__ import annotations

import json

import pytest
from elasticdf_contract.wiring import check_chain, vnx_socket_pairs
from elasticdf_operator import builders, crdgen, inventory
from elasticdf_operator.api import ElasticInferenceSpec
from elasticdf_operator.builders import Owner
from elasticdf_operator.decide import Decision
from elasticdf_operator.status import build_status
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_partitioner.plan import Instance, Segment
from elasticdf_segment.backends import socket_table
from elasticdf_segment.vnx import Socket
from pydantic import ValidationError

CATALOG = load_catalog()
OWNER = Owner("net", "ns", "uid-1")


def test_crds_are_fresh():
    for name, text in crdgen.files().items():
        path = crdgen.DEFAULT_DIR / name
        assert path.exists() and path.read_text() == text, f"{path} is stale: python -m elasticdf_operator.crdgen"


def test_crd_schema_is_structural():
    text = json.dumps(crdgen.crd(crdgen.RESOURCES[0]))
    assert "$ref" not in text and "anyOf" not in text and '"const"' not in text
    version = crdgen.crd(crdgen.RESOURCES[0])["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["objective"]["enum"] == ["throughput", "latency", "cost"]
    assert spec["properties"]["targetFPS"]["exclusiveMinimum"] is True
    assert "u280" in spec["properties"]["placement"]["properties"]["cardTypes"]["items"]["enum"]


@pytest.mark.parametrize("bad", [
    {"model": {}},
    {"model": {"name": "x", "artifacts": {"onnx": "s3://a"}}},
    {"model": {"name": "x"}, "objective": "fastest"},
    {"model": {"name": "x"}, "replicas": -1},
    {"model": {"name": "x"}, "autoscaling": {"minReplicas": 3, "maxReplicas": 2, "targetFPS": 10}},
])
def test_spec_validation(bad):
    with pytest.raises(ValidationError):
        ElasticInferenceSpec.model_validate(bad)


def node(name, cards, ready=True, switch=None):
    alloc = {}
    for c in cards:
        res = CATALOG.card(c).device_plugin_resource
        alloc[res] = str(int(alloc.get(res, 0)) + 1)
    labels = {inventory.LABEL_CARD_TYPES: ".".join(sorted(set(cards)))}
    if switch:
        labels[inventory.LABEL_SWITCH] = switch
    return {"metadata": {"name": name, "labels": labels, "annotations": {inventory.ANNOTATION_CARDS: ",".join(cards)}},
            "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_inventory_free_cards_and_index_mapping():
    nodes = [node("a", ["u280", "u250", "u280"]), node("b", ["u250"], ready=False)]
    held = {("a", 0)}
    slots = inventory.free_slots(nodes, held, CATALOG)
    assert [(s.node, s.index, s.type) for s in slots] == [("a", 1, "u250"), ("a", 2, "u280")]
    fc = inventory.build_cluster(slots, nodes, CATALOG)
    assert [c.type.name for c in fc.cluster.cards] == ["u250", "u280"]
    assert fc.physical[("a", 1)] == 2
    assert inventory.free_slots(nodes, held, CATALOG, card_types=["u280"]) == [inventory.Slot("a", 2, "u280")]


def test_fabric_costs_uplinks_and_pool_reach_the_partitioner():
    nodes = [node("a", ["u280"], switch="leaf-a"), node("b", ["u280"], switch="leaf-a")]
    fabrics = [{"metadata": {"name": "z-rack"}, "spec": {"costs": {"u280": 2.5}}},
               {"metadata": {"name": "a-rack"}, "spec": {
                   "switches": [{"name": "leaf-a", "uplinkGbps": 200}, {"name": "leaf-b", "uplinkGbps": 100}],
                   "uplinks": [{"node": "b", "switch": "leaf-b"}], "costs": {"u280": 9.0},
                   "addressPool": "10.7.0.0/16"}}]
    view = inventory.fabric_view(fabrics)
    assert view.costs == {"u280": 2.5}  # later Fabric names win
    assert view.pool == "10.7.0.0/16"
    fc = inventory.build_cluster(inventory.free_slots(nodes, set(), CATALOG), nodes, CATALOG, view)
    assert {c.node: c.switch for c in fc.cluster.cards} == {"a": "leaf-a", "b": "leaf-b"}  # uplinks beat labels
    assert fc.cluster.switches["leaf-a"].uplink_gbps == 200
    assert fc.cluster.cost_per_hour("u280") == 2.5


def test_fabric_pricing_an_unknown_card_type_is_a_named_error():
    from elasticdf_partitioner.errors import InputError

    nodes = [node("a", ["u280"])]
    view = inventory.fabric_view([{"metadata": {"name": "f"}, "spec": {"costs": {"u999": 1.0}}}])
    with pytest.raises(InputError, match="u999"):
        inventory.build_cluster(inventory.free_slots(nodes, set(), CATALOG), nodes, CATALOG, view)


def test_held_cards_from_configmaps_and_pods():
    cm = {"metadata": {"annotations": {inventory.ANNOTATION_CARDS: json.dumps([{"node": "a", "card": 1}])}}}
    pod = {"metadata": {"annotations": {inventory.ANNOTATION_CARD: "b/0"}}, "status": {"phase": "Running"}}
    done = {"metadata": {"annotations": {inventory.ANNOTATION_CARD: "b/1"}}, "status": {"phase": "Failed"}}
    assert inventory.held_slots([cm], [pod, done]) == {("a", 1), ("b", 0)}


def two_segment_instance():
    seg = dict(slrs=[0], ingress_gbps=1, egress_gbps=1, resources={}, utilisation={}, slr_layers={})
    return Instance(fps=100, fclk_mhz=200, cycles_per_frame=1, latency_ms=1, segments=[
        Segment(node="a", card=0, card_type="u280", layers=["l0", "l4"], layer_range=[0, 4], **seg),
        Segment(node="b", card=0, card_type="u250", layers=["l5", "l9"], layer_range=[5, 9], **seg)])


def group_of_two_cards(mode):
    spec = ElasticInferenceSpec.model_validate({"model": {"name": "cnv"}})
    places = [builders.CardPlace("a", 2, "u280", 0, "sha256:x"), builders.CardPlace("b", 0, "u250", 1, "sha256:y")]
    inst = two_segment_instance()
    cards = builders.group_wiring(OWNER, spec, 5, mode, places, [(3, inst), (4, inst)],
                                  {("a", 0): 0, ("b", 0): 1})
    return spec, cards


@pytest.mark.parametrize("mode", ["emulation", "xrt"])
def test_group_wiring_chains_and_card_pods(mode):
    spec, cards = group_of_two_cards(mode)
    assert [len(c.segments) for c in cards] == [2, 2], "each card hosts a segment of both instances"
    for index in (3, 4):
        ws = sorted((w for c in cards for w in c.segments if w.instance == index), key=lambda w: w.segment)
        assert check_chain(ws) == [] and ws[0].card == 2
        assert ws[0].upstream.kind == "gateway" and ws[1].downstream.kind == "gateway"
    assert [w.listen.port for w in cards[0].segments] == [builders.DATA_PORT, builders.DATA_PORT + 1]
    cm = builders.group_configmap(OWNER, 5, cards, {"instances": []}, 200.0, 3.6)
    assert builders.card_wirings_of(cm) == cards
    pod = builders.card_pod(OWNER, spec, 5, 1, cards[1], CATALOG)
    assert pod["metadata"]["labels"][builders.LABEL_GROUP] == "5"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {CATALOG.card("u250").device_plugin_resource: "1"}
    term = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["b"]


def test_qsfp_addresses_are_unique():
    addrs = {builders.qsfp_address("10.100.0.0/16", n, c) for n in range(8) for c in range(16)}
    assert len(addrs) == 128


def test_status_conditions_are_typed_and_ready_is_derived():
    spec, cards = group_of_two_cards("emulation")
    cm = builders.group_configmap(OWNER, 5, cards, {"instances": [{"index": 3, "fps": 100.0},
                                                                   {"index": 4, "fps": 100.0}]}, 200.0, 3.0)
    cm["metadata"]["uid"] = "cm"
    pods = [builders.card_pod(OWNER, spec, 5, p, c, CATALOG) for p, c in enumerate(cards)]
    for p in pods:
        p["spec"]["nodeName"] = "a"
        p["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    ei = {"metadata": {"name": "net", "namespace": "ns", "generation": 1}, "spec": {"model": {"name": "cnv"}}}
    status = build_status(ei, OWNER, 1, [cm], pods, Decision(active={3}), {"name": "cnv"})
    assert status.phase == "Running" and (status.ready_replicas, status.standby_replicas) == (1, 1)
    assert status.predicted_fps == 100.0 and status.fps_per_dollar_hour == pytest.approx(100 / 3, abs=1e-3)
    short = Decision(conditions={"PartitionSolved": ("False", "PartitionInfeasible", "too big")}, active={3, 4})
    status = build_status(ei, OWNER, 3, [cm], pods, short, {"name": "cnv"})
    by_type = {c.type: c for c in status.conditions}
    assert by_type["Ready"].reason == "PartitionInfeasible" and by_type["Scheduled"].reason == "InsufficientCards"
    again = build_status({**ei, "status": status.model_dump(by_alias=True, mode="json")}, OWNER, 3, [cm], pods,
                         short, {"name": "cnv"})
    assert {c.type: c.last_transition_time for c in again.conditions} == \
        {c.type: c.last_transition_time for c in status.conditions}


def test_a_card_wired_with_a_build_pulls_it_in_an_init_container():
    spec, cards = group_of_two_cards("emulation")
    assert "initContainers" not in builders.card_pod(OWNER, spec, 5, 0, cards[0], CATALOG)["spec"]
    reference = "oci://registry.elasticdf-system.svc:5000/elasticdf/builds@sha256:" + "ab" * 32
    card = cards[0].model_copy(update={"build": "sha256:" + "cd" * 16}, deep=True)
    for w in card.segments:
        w.artifacts.build = reference
    pull = builders.BuildPull(insecure=True, pull_secret="regcred")
    pod = builders.card_pod(OWNER, spec, 5, 0, card, CATALOG, pull=pull)
    [init] = pod["spec"]["initContainers"]
    assert init["image"] == pod["spec"]["containers"][0]["image"]
    assert init["command"] == ["elasticdf", "build", "pull", reference, "--build", card.build, "-o",
                               builders.BUILD_DIR, "--insecure", "--docker-config",
                               f"{builders.BUILD_PULL_SECRET_DIR}/config.json"]
    segments = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "build", "mountPath": builders.BUILD_DIR, "readOnly": True} in segments
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["build"] == {"name": "build", "emptyDir": {}}
    assert volumes["build-pull-secret"]["secret"]["secretName"] == "regcred"


def test_xrt_group_socket_tables_send_where_the_next_card_receives():
    """Cards hosting segments of several instances (xrt): the socket table each card pod programs from its
    wiring (the segment runtime's socket_table) has, for every hop of every instance, a send entry on the
    sending card that the receiving card's receive entry matches (ip, ports)."""
    _, cards = group_of_two_cards("xrt")
    tables = [socket_table(c) for c in cards]
    pairs = [vnx_socket_pairs([not (w.first and w.last) for w in c.segments]) for c in cards]
    where = {(w.instance, w.segment): (c, p) for c, card in enumerate(cards) for p, w in enumerate(card.segments)}
    hops = 0
    for (instance, segment), (c, p) in where.items():
        if (instance, segment + 1) not in where:
            continue
        (d, q), w, nxt = where[instance, segment + 1], cards[c].segments[p], cards[where[instance, segment + 1][0]]
        sent, received = tables[c][pairs[c][p][0]], tables[d][pairs[d][q][1]]
        assert sent == Socket(nxt.segments[q].listen.ip, nxt.segments[q].listen.port, w.listen.port)
        assert received == Socket(w.listen.ip, w.listen.port, nxt.segments[q].listen.port)
        hops += 1
    assert hops == 2 and all(len(t) == 4 for t in tables)
