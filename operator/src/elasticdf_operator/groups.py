"""Card groups and card builds (pure): how a plan becomes units the operator places, holds and releases.

A plan's instances share cards (several small instances on one card, a pair of cards hosting instances that
each span both): the cards that together host whole instances form a *group* — a connected component of the
instance/card graph, which is the solver's pattern (one card, a card pair, ...) or a finer piece of it. A group
is placed and released whole. Each card runs one *build*: the segments it hosts with their folding and
floorplan, its card type and clock, identified by a content digest (instances' identities are not part of it,
so every card with the same work shares one build and one bitstream).
"""

from __future__ import annotations

from dataclasses import dataclass

from elasticdf_partitioner import builds
from elasticdf_partitioner.plan import Instance, Plan

from .api import ModelSource


@dataclass
class PlannedGroup:
    cards: list[tuple[str, int, str]]  # (node, card index in the solved cluster, card type), in card order
    instances: list[Instance]

    @property
    def fps(self) -> float:
        return sum(i.fps for i in self.instances)


def plan_groups(plan: Plan) -> list[PlannedGroup]:
    """The plan's instances split into groups of cards no other group touches, in the plan's order."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def root(card):
        while parent.setdefault(card, card) != card:
            card = parent[card]
        return card

    for inst in plan.instances:
        cards = [(s.node, s.card) for s in inst.segments]
        for card in cards[1:]:
            parent[root(card)] = root(cards[0])
        root(cards[0])
    groups: dict[tuple[str, int], PlannedGroup] = {}
    for inst in plan.instances:
        group = groups.setdefault(root((inst.segments[0].node, inst.segments[0].card)), PlannedGroup([], []))
        group.instances.append(inst)
        for s in inst.segments:
            if (s.node, s.card, s.card_type) not in group.cards:
                group.cards.append((s.node, s.card, s.card_type))
    for group in groups.values():
        group.cards.sort()
    return list(groups.values())


def model_identity(source: ModelSource) -> str:
    """What a build's digest says about the model (a zoo name or the ONNX artifact's URI)."""
    return builds.model_identity(source.name, source.artifacts.onnx if source.artifacts else None)


def card_builds(model: str, group: PlannedGroup) -> dict[tuple[str, int], dict]:
    """(node, card) -> build record {digest, model, cardType, fclkMhz, segments[{layers, slrs, floorplan}],
    folding} (elasticdf_partitioner.builds computes it, the operator keeps it as JSON in the group record)."""
    records = builds.card_records(model, group.instances)
    return {(node, card): records[(node, card)].model_dump(by_alias=True) for node, card, _ in group.cards}
