"""What e2e tests read back of a deployed ElasticInference: its card groups (group ConfigMaps), its card pods
(one per card) and its status, and the checks every test repeats on them (wiring chains, one pod per card,
no card booked twice)."""

from __future__ import annotations

from collections import Counter
from functools import cache

from elasticdf_contract.names import card_pod_name, cards_service, label_value
from elasticdf_contract.wiring import check_chain
from elasticdf_operator.decide import GroupRecord
from elasticdf_partitioner.catalog import load_catalog

GROUP, VERSION, PLURAL = "elasticdf.io", "v1alpha1", "elasticinferences"
MANAGED = "app.kubernetes.io/managed-by=elasticdf-operator"
CATALOG = load_catalog()
POOL_LABEL = "e2e.elasticdf.io/pool"  # set on the nodes of the `pool` fixture


@cache
def per_card(model: str, card: str) -> int:
    """How many instances of zoo `model` the plan puts on one card of type `card`: the operator's group there
    (MobileNetV1 on a U280: 1,793 + 996 fps)."""
    from elasticdf_partitioner.cluster import ClusterSpec, cluster_from_spec
    from elasticdf_partitioner.solver import solve
    from elasticdf_partitioner.zoo import load_model

    cluster = cluster_from_spec(ClusterSpec(nodes=[{"name": "one", "cards": [card]}]), CATALOG)
    return len(solve(load_model(model), cluster).instances)


def ei(name: str, model: str = "cnv", **spec) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "metadata": {"name": name},
            "spec": {"model": {"name": model}, **spec}}


def live(pods: list) -> list:
    return [p for p in pods if not p.metadata.deletion_timestamp and p.status.phase not in ("Succeeded", "Failed")]


def card_pods(core_v1, ns: str, name: str) -> list:
    """The card pods of `name` (not the gateway's), live or not."""
    sel = f"elasticdf.io/name={label_value(name)},elasticdf.io/role=card"
    return core_v1.list_namespaced_pod(ns, label_selector=sel).items


def groups(core_v1, ns: str, name: str) -> list[GroupRecord]:
    """The card groups of `name` as the operator reads them back (group ConfigMaps), by index."""
    sel = f"elasticdf.io/name={label_value(name)},elasticdf.io/role=group"
    cms = core_v1.list_namespaced_config_map(ns, label_selector=sel).items
    plain = [core_v1.api_client.sanitize_for_serialization(cm) for cm in cms]
    return sorted((GroupRecord.parse(cm) for cm in plain), key=lambda g: g.index)


def status(custom, ns: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name).get("status") or {}


def condition(custom, ns: str, name: str, type_: str) -> dict | None:
    return next((c for c in status(custom, ns, name).get("conditions", []) if c["type"] == type_), None)


def serving(core_v1, custom, ns: str, name: str, replicas: int):
    """The live card pods when `replicas` instances are active and ready and every card pod of every group
    is Running (standby instances included: they stay flashed); else None."""
    st = status(custom, ns, name)
    if st.get("replicas") != replicas or st.get("readyReplicas") != replicas:
        return None
    pods = live(card_pods(core_v1, ns, name))
    cards = sum(len(g.cards) for g in groups(core_v1, ns, name))
    ok = len(pods) == cards and all(p.status.phase == "Running" for p in pods)
    return pods if ok else None


def card_of(pod) -> tuple[str, int]:
    node, index = pod.metadata.annotations["elasticdf.io/card"].rsplit("/", 1)
    return node, int(index)


def check_card_pods(core_v1, ns: str, name: str) -> list[GroupRecord]:
    """One pod per card of every group, on its card's node, holding exactly that card's device-plugin resource
    and a data port per hosted segment; every segment listens on its own pod and every instance's chain is
    wired where the next segment listens. Returns the groups."""
    recs = groups(core_v1, ns, name)
    pods = {p.metadata.name: p for p in live(card_pods(core_v1, ns, name))}
    assert len(pods) == sum(len(g.cards) for g in recs), f"one pod per card: {sorted(pods)}"
    for g in recs:
        for position, card in enumerate(g.cards):
            pod = pods[card_pod_name(name, g.index, position)]
            assert card_of(pod) == (card.node, card.card)
            assert pod.spec.node_name in (None, card.node), "pod bound to its card's node"
            limits = pod.spec.containers[0].resources.limits
            assert limits == {CATALOG.card(card.card_type).device_plugin_resource: "1"}, limits
            ports = {p.container_port for p in pod.spec.containers[0].ports}
            for seg in card.segments:
                assert seg.listen.port in ports
                if seg.listen.kind == "pod":
                    assert seg.listen.host == f"{pod.metadata.name}.{cards_service(name)}.{ns}.svc"
        for inst in g.instances:
            wirings = g.wirings(inst["index"])
            assert wirings and check_chain(wirings) == [], f"instance {inst['index']}: {check_chain(wirings)}"
    cards = [(c.node, c.card) for g in recs for c in g.cards]
    assert len(cards) == len(set(cards)), f"a card is in two groups: {cards}"
    return recs


def check_no_double_booking(core_v1, ns: str, capacity: dict[str, int]) -> int:
    """No card runs two pods (of any resource in `ns`), no node more pods than cards; returns the pod count."""
    pods = [p for p in live(core_v1.list_namespaced_pod(ns, label_selector=MANAGED).items)
            if p.metadata.labels.get("elasticdf.io/role") == "card"]
    per_card = Counter(card_of(p) for p in pods)
    assert all(n == 1 for n in per_card.values()), f"a card runs two card pods: {per_card}"
    per_node = Counter(node for node, _ in per_card)
    assert all(per_node[n] <= capacity.get(n, 0) for n in per_node), f"more cards than a node has: {per_node}"
    for p in pods:
        if p.spec.node_name:
            assert p.spec.node_name == card_of(p)[0], "pod bound to another node than its card"
    return len(pods)


def uids(core_v1, ns: str, name: str) -> dict[str, str]:
    return {p.metadata.name: p.metadata.uid for p in live(card_pods(core_v1, ns, name))}


def pool_nodes(placement: dict, count: int) -> list[str]:
    """The node names of a `pool` fixture's placement (`<pool>-<i>`)."""
    return [f"{placement['nodeSelector'][POOL_LABEL]}-{i}" for i in range(count)]
