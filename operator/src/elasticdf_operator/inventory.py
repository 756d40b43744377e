"""Inventory: Alveo nodes (labels, allocatable) minus cards held by segments -> the partitioner's Cluster.

Pure functions over API objects as plain camelCase dicts (what the API server sends, what kopf hands out).
Which cards are held is derived from the API server: every group ConfigMap records the cards of its group
(a reservation written before its pods exist) and every card pod names its card.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from elasticdf_contract.names import ANNOTATION_CARD, ANNOTATION_CARDS, LABEL_CARD_TYPES, LABEL_SWITCH
from elasticdf_partitioner.catalog import Catalog
from elasticdf_partitioner.cluster import Cluster, ClusterSpec, NodeSpec, SwitchSpec, cluster_from_spec

__all__ = ["ANNOTATION_CARD", "ANNOTATION_CARDS", "LABEL_CARD_TYPES", "LABEL_SWITCH"]
DEFAULT_SWITCH = "default"


@dataclass(frozen=True)
class Slot:
    """One physical card: node, index on the node, card type."""

    node: str
    index: int
    type: str


@dataclass
class FreeCluster:
    """The partitioner's view of free cards and the way back to physical card indices."""

    cluster: Cluster | None
    physical: dict[tuple[str, int], int] = field(default_factory=dict)  # (node, index in cluster) -> index
    reason: str = ""

    def slot_index(self, node: str, card: int) -> int:
        return self.physical[(node, card)]


def node_is_usable(node: dict) -> bool:
    if node.get("spec", {}).get("unschedulable"):
        return False
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_is_healthy(node: dict) -> bool:
    """Ready (a cordoned node keeps its running instances; it only takes no new ones)."""
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def not_ready_for(node: dict, now: dt.datetime) -> float:
    """Seconds the node has been NotReady (0 when Ready; unknown since when: counts as long ago)."""
    for c in node.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") != "True":
            since = c.get("lastTransitionTime")
            if not since:
                return float("inf")
            return (now - dt.datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
    return 0.0 if node_is_healthy(node) else float("inf")


def broken_cards(cards: list[dict], nodes: list[dict], catalog: Catalog, now: dt.datetime | None = None,
                 grace_seconds: float = 0.0) -> list[str]:
    """Why some of `cards` ({node, card}) can no longer run a segment: node deleted, NotReady for longer than
    the grace period (a kubelet restart or a short network blip must not move running groups), card gone."""
    by_name = {n["metadata"]["name"]: n for n in nodes}
    now = now or dt.datetime.now(dt.UTC)
    out = []
    for entry in cards:
        name, index = entry["node"], int(entry["card"])
        node = by_name.get(name)
        if node is None:
            out.append(f"node {name} is gone")
        elif not node_is_healthy(node) and not_ready_for(node, now) >= grace_seconds:
            out.append(f"node {name} is NotReady")
        elif index not in {s.index for s in node_slots(node, catalog)}:
            out.append(f"card {name}/{index} is no longer allocatable")
    return out


def node_slots(node: dict, catalog: Catalog) -> list[Slot]:
    """Physical cards of a node: the ordered annotation when present, else allocatable device-plugin counts."""
    return _slots(node, catalog.by_device_plugin_resource())


def _slots(node: dict, by_resource: dict[str, str]) -> list[Slot]:
    name = node["metadata"]["name"]
    allocatable = node.get("status", {}).get("allocatable") or {}
    counts: dict[str, int] = {}
    for resource, qty in allocatable.items():
        if resource in by_resource:
            counts[by_resource[resource]] = counts.get(by_resource[resource], 0) + int(str(qty))
    listed = (node["metadata"].get("annotations") or {}).get(ANNOTATION_CARDS)
    order = [t for t in listed.split(",") if t] if listed else [t for t in sorted(counts) for _ in range(counts[t])]
    slots, seen = [], dict.fromkeys(counts, 0)
    for index, card_type in enumerate(order):
        if seen.get(card_type, 0) < counts.get(card_type, 0):  # capacity lost -> fewer cards
            seen[card_type] += 1
            slots.append(Slot(name, index, card_type))
    return slots


def held_slots(configmaps: list[dict], pods: list[dict]) -> set[tuple[str, int]]:
    """(node, card index) of every card reserved by an instance ConfigMap or used by a live segment pod."""
    held: set[tuple[str, int]] = set()
    for cm in configmaps:
        for entry in json.loads((cm["metadata"].get("annotations") or {}).get(ANNOTATION_CARDS, "[]")):
            held.add((entry["node"], int(entry["card"])))
    for pod in pods:
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        ref = (pod["metadata"].get("annotations") or {}).get(ANNOTATION_CARD)
        if ref:
            node, index = ref.rsplit("/", 1)
            held.add((node, int(index)))
    return held


def matches(labels: dict[str, str], selector: dict[str, str] | None) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def free_slots(nodes: list[dict], held: set[tuple[str, int]], catalog: Catalog,
               card_types: list[str] | None = None, node_selector: dict[str, str] | None = None) -> list[Slot]:
    slots = []
    by_resource = catalog.by_device_plugin_resource()  # once, not per node: 1000 nodes are the common case
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        if not node_is_usable(node) or not matches(node["metadata"].get("labels") or {}, node_selector):
            continue
        slots += [s for s in _slots(node, by_resource) if (s.node, s.index) not in held
                  and (not card_types or s.type in card_types)]
    return slots


def switch_of(node: dict) -> str:
    return (node["metadata"].get("labels") or {}).get(LABEL_SWITCH, DEFAULT_SWITCH)


@dataclass
class FabricView:
    """What the Fabric resources say, merged: switches and their uplinks, node -> switch links that override
    the nodes' switch labels, $/card-hour and clock (MHz) overrides per card type, the QSFP address pool."""

    switches: list[SwitchSpec] = field(default_factory=list)
    node_switch: dict[str, str] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    clocks: dict[str, float] = field(default_factory=dict)
    pool: str | None = None


def fabric_view(fabrics: list[dict]) -> FabricView:
    view = FabricView()
    for fabric in sorted(fabrics, key=lambda f: f["metadata"]["name"]):
        spec = fabric.get("spec") or {}
        view.switches += [SwitchSpec(name=s["name"], uplink_gbps=s.get("uplinkGbps", 400), to=s.get("to"))
                          for s in spec.get("switches", [])]
        view.node_switch.update({u["node"]: u["switch"] for u in spec.get("uplinks", [])})
        view.costs.update(spec.get("costs") or {})
        view.clocks.update(spec.get("clocks") or {})
        view.pool = view.pool or spec.get("addressPool")
    return view


def build_cluster(slots: list[Slot], nodes: list[dict], catalog: Catalog,
                  fabric: FabricView | None = None) -> FreeCluster:
    """Free slots -> a partitioner Cluster whose card indices map back to physical ones."""
    if not slots:
        return FreeCluster(None, reason="no free Alveo card matches the placement")
    fabric = fabric or FabricView()
    switch = {n["metadata"]["name"]: switch_of(n) for n in nodes} | fabric.node_switch
    per_node: dict[str, list[Slot]] = {}
    for slot in slots:
        per_node.setdefault(slot.node, []).append(slot)
    specs = [NodeSpec(name=node, cards=[s.type for s in own], switch=switch.get(node, DEFAULT_SWITCH))
             for node, own in per_node.items()]
    physical = {(node, i): s.index for node, own in per_node.items() for i, s in enumerate(own)}
    cluster = cluster_from_spec(ClusterSpec(nodes=specs, switches=fabric.switches, costs=fabric.costs), catalog)
    return FreeCluster(cluster, physical)
