"""Cluster description (DESIGN §5.2): nodes with Alveo cards, switches of the 100G fabric, cost overrides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .catalog import CardType, Catalog, load_catalog, parse_yaml
from .errors import InputError

LINK_GBPS = 100.0  # one QSFP28 port


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    cards: list[str] = Field(min_length=1)
    switch: str | None = None
    # how the dev cluster runs the node (kwok: simulated; real: kubelet + containerd); planning ignores it
    runtime: Literal["kwok", "real"] = "kwok"


class SwitchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    uplink_gbps: float = Field(400, gt=0)
    to: str | None = None


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[NodeSpec] = Field(min_length=1)
    switches: list[SwitchSpec] = []
    costs: dict[str, float] = {}

    @model_validator(mode="after")
    def _unique_names(self) -> ClusterSpec:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, repeated: {sorted({n for n in names if names.count(n) > 1})}")
        return self


@dataclass(frozen=True)
class Card:
    """One concrete card: `index` is its position on the node (the device the device plugin hands out)."""

    id: int
    node: str
    index: int
    type: CardType
    switch: str

    @property
    def label(self) -> str:
        return f"{self.node}/{self.index}"


@dataclass
class Cluster:
    cards: list[Card]
    switches: dict[str, SwitchSpec]
    costs: dict[str, float]
    catalog: Catalog

    def cost_per_hour(self, card_type: str) -> float:
        return self.costs.get(card_type, self.catalog.card(card_type).cost_per_hour)

    @property
    def card_types(self) -> list[str]:
        return sorted({c.type.name for c in self.cards})


def cluster_from_spec(spec: ClusterSpec, catalog: Catalog | None = None) -> Cluster:
    catalog = catalog or load_catalog()
    switches = {s.name: s for s in spec.switches}
    default_switch = spec.switches[0].name if len(spec.switches) == 1 else "default"
    cards = []
    for n, node in enumerate(spec.nodes):
        switch = node.switch or default_switch
        if switches and switch not in switches and node.switch is not None:
            raise InputError(f"nodes[{n}].switch", f"unknown switch {switch!r}", sorted(switches))
        for i, card_type in enumerate(node.cards):
            card = catalog.card(card_type, field=f"nodes[{n}].cards[{i}]")
            cards.append(Card(len(cards), node.name, i, card, switch))
    for card_type in spec.costs:
        catalog.card(card_type, field="costs")
    return Cluster(cards, switches, {k.lower(): v for k, v in spec.costs.items()}, catalog)


def load_cluster(path: str | Path, catalog: Catalog | None = None) -> Cluster:
    try:
        document = parse_yaml(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(str(path), "cluster file not found") from None
    except yaml.YAMLError as err:
        raise InputError(str(path), f"malformed YAML: {err}") from None
    try:
        spec = ClusterSpec.model_validate(document)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "cluster"
        raise InputError(f"{path}: {where}", first["msg"]) from None
    return cluster_from_spec(spec, catalog)
