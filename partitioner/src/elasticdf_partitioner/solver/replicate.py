"""Step 4 (replicate): spread instances over the whole cluster.

Small clusters are searched as one group. Larger ones are covered by *patterns*: the best packing of one
card of each type and of each pair of types (and, for models that need more, homogeneous groups of 3..k
cards). An integer program (CP-SAT) then picks how many copies of each pattern to run under each switch,
maximising fps or minimising $/hour for a target fps. Multi-card patterns stay under one switch, so uplinks
carry no segment traffic there; in a cluster searched as one group, traffic between cards under different leaf
switches counts against both leaves' uplinks.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass

from ..catalog import Limits
from ..cluster import Card, Cluster
from .pack import GroupPacker, GroupResult, PackSettings
from .stages import Pipeline, kept_search

SMALL_CLUSTER = 2
EXHAUSTIVE_STAGES = 8
EXHAUSTIVE_INSTANCES = 24
# steps of its walks an exhaustive search chosen here may take (3-9 s here): past them the plan is the better of
# what it found and the fast mode's, not proven optimal (two toy cards of 3 SLRs took 6 minutes unbounded)
EXHAUSTIVE_STEPS = 300_000


@dataclass
class Pattern:
    types: tuple[str, ...]
    result: GroupResult
    cost_per_hour: float


@dataclass
class Assignment:
    """A group's packing bound to concrete cards."""

    cards: list[Card]
    result: GroupResult


def _packer(pipeline: Pipeline, cards: list[Card], cluster: Cluster, limits: Limits, ratios,
            settings: PackSettings) -> GroupPacker:
    return GroupPacker(pipeline, cards, cluster.catalog, limits, ratios, settings)


def solve_small(pipeline, cluster, limits, ratios, levels, settings) -> tuple[list[Assignment], bool]:
    """The whole cluster searched as one group; the search is kept like a pattern's (by the cards' types and
    switches, not their names), so re-planning, and the next process, find it without searching.

    Two cards under one switch that cannot be searched exhaustively are planned as larger clusters are (each
    card alone, or the pair where it beats them): the pair's fast search does not start from what each card
    plans alone and could end below it (ResNet-50: 3,986 fps on 2xU280 where one U280 plans 2,234). Under two
    switches the pair is searched as one group with its uplinks (patterns stay under one switch)."""
    uplinks = {name: switch.uplink_gbps for name, switch in cluster.switches.items()}
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, limits, ratios, settings, uplinks)
    exhaustive = settings.exhaustive or _exhaustive_is_cheap(packer, levels)
    if _as_patterns(cluster, settings, exhaustive):
        found = patterns(pipeline, cluster, limits, ratios, levels, settings)
        return bind(cluster, found, choose_patterns(cluster, found, None)), False
    key = (_search_key(cluster.cards, cluster, limits, ratios, levels, settings),
           tuple(c.switch for c in cluster.cards), tuple(sorted(uplinks.items())))
    result = kept_search(pipeline, key, lambda: _search_small(packer, levels, exhaustive))
    return [Assignment(cluster.cards, result)], result.optimal and exhaustive


def _as_patterns(cluster: Cluster, settings: PackSettings, exhaustive: bool) -> bool:
    """Two cards under one switch, not searched exhaustively, and no instance count capped for the whole group
    (`max_instances` would hold per pattern, i.e. per card)."""
    return (len(cluster.cards) == SMALL_CLUSTER and not exhaustive and settings.max_instances is None
            and len({c.switch for c in cluster.cards}) == 1)


def _choose_for_two(cluster: Cluster, found: list[Pattern]) -> dict[str, Counter]:
    """choose_patterns' fps choice for at most two cards under one switch, without its CP-SAT model (loading it
    costs a first plan ~0.3 s): a pair pattern is only found where it beats its two cards alone, so it is the
    choice; else each card runs its own pattern."""
    switch = cluster.cards[0].switch
    pairs = [p for p, pattern in enumerate(found) if len(pattern.types) == 2]
    if pairs:
        return {switch: Counter({pairs[0]: 1})}
    single = {pattern.types[0]: p for p, pattern in enumerate(found) if len(pattern.types) == 1}
    return {switch: Counter(single[c.type.name] for c in cluster.cards if c.type.name in single)}


def _exhaustive_is_cheap(packer: GroupPacker, levels: list[int]) -> bool:
    """Exhaustive search branches at every instance placed: fine for a few instances of a few stages, hopeless
    for a tiny network that fits a card hundreds of times (its depth is the instance count)."""
    return (len(packer.pipeline.stages) <= EXHAUSTIVE_STAGES and len(packer.cards) <= SMALL_CLUSTER
            and packer.instance_bound(levels) <= EXHAUSTIVE_INSTANCES)


def _search_small(packer: GroupPacker, levels: list[int], exhaustive: bool) -> GroupResult:
    settings = packer.settings
    packer.settings = PackSettings(**{**settings.__dict__, "exhaustive": exhaustive})
    if exhaustive and not settings.exhaustive:
        packer.settings.exhaustive_step_budget = EXHAUSTIVE_STEPS
    return packer.solve(levels)


def _search_key(cards: list[Card], cluster: Cluster, limits: Limits, ratios, levels, settings) -> tuple:
    """What a group search depends on besides the pipeline and the cards' switches: the card types in order,
    shell IP costs, limits, levels, the fps-per-resource ratios and the settings."""
    return (tuple(c.type.model_dump_json() for c in cards), cluster.catalog.ip_costs.model_dump_json(),
            limits.model_dump_json(), tuple(levels), tuple(ratios), tuple(sorted(vars(settings).items())))


def patterns(pipeline, cluster, limits, ratios, levels, settings) -> list[Pattern]:
    by_type = {t: [c for c in cluster.cards if c.type.name == t] for t in cluster.card_types}
    singles = {t: _pattern((t,), by_type, pipeline, cluster, limits, ratios, levels, settings) for t in by_type}
    found = [p for p in singles.values() if p.result.placements]
    for a, b in itertools.combinations_with_replacement(by_type, 2):
        if len(by_type[a]) < (2 if a == b else 1):
            continue
        floor = singles[a].result.fps + singles[b].result.fps
        pair = _pattern((a, b), by_type, pipeline, cluster, limits, ratios, levels, settings, floor)
        if _pair_wins(pair, singles[a], singles[b]):
            found.append(pair)
    size = 3
    while not found and size <= settings.max_cards_per_instance:
        found = [_pattern((t,) * size, by_type, pipeline, cluster, limits, ratios, levels, settings)
                 for t, cards in by_type.items() if len(cards) >= size]
        found = [p for p in found if p.result.placements]
        size += 1
    return found


def _pair_wins(pair: Pattern, a: Pattern, b: Pattern) -> bool:
    """A pair is only worth having where it beats its two cards used separately: more fps, or as much with
    fewer (so faster) instances (ESPCN on two U50 with 4 % of their LUTs: one 6 fps instance over both cards
    rather than a 3 fps one on each)."""
    apart = a.result.fps + b.result.fps
    fewer = len(pair.result.placements) < len(a.result.placements) + len(b.result.placements)
    return pair.result.fps > apart + 1e-6 or (bool(pair.result.placements) and fewer
                                                and pair.result.fps >= apart - 1e-6)


def _pattern(shape, by_type, pipeline, cluster, limits, ratios, levels, settings, floor=0.0) -> Pattern:
    taken: Counter = Counter()
    cards = []
    for t in shape:
        cards.append(by_type[t][taken[t]])
        taken[t] += 1
    # the search depends only on what is in this key (not on which cards of the cluster), so re-planning on
    # other free cards, and later processes, reuse it
    key = ("pattern", _search_key(cards, cluster, limits, ratios, levels, settings), floor)
    result = kept_search(pipeline, key,
                         lambda: _packer(pipeline, cards, cluster, limits, ratios, settings).solve(levels, floor))
    return Pattern(shape, result, sum(cluster.cost_per_hour(t) for t in shape))


def choose_patterns(cluster: Cluster, found: list[Pattern], target_fps: float | None) -> dict[str, Counter]:
    """How many copies of each pattern (by index) to run per switch. Maximises fps, or with a target fps
    minimises $/hour (then fps) subject to reaching it."""
    supply: dict[str, Counter] = defaultdict(Counter)
    for card in cluster.cards:
        supply[card.switch][card.type.name] += 1
    if target_fps is None and len(cluster.cards) <= SMALL_CLUSTER and len(supply) == 1:
        return _choose_for_two(cluster, found)
    # imported here: CP-SAT loads pandas (~0.3 s), which plans of one or two cards never need
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    x = {}
    for sw, counts in supply.items():
        for p, pattern in enumerate(found):
            need = Counter(pattern.types)
            most = min(counts[t] // n for t, n in need.items())
            if most > 0:
                x[sw, p] = model.new_int_var(0, most, f"x_{sw}_{p}")
        for t, available in counts.items():
            model.add(sum(x[sw, p] * Counter(found[p].types)[t] for (s, p) in x if s == sw) <= available)
    fps = sum(v * round(found[p].result.fps) for (_, p), v in x.items())
    cost = sum(v * round(found[p].cost_per_hour * 1000) for (_, p), v in x.items())
    if target_fps is None:
        model.maximize(fps * 100000 - cost)
    else:
        model.add(fps >= round(target_fps))
        model.minimize(cost * 10_000_000 - fps)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = 5.0
    solver.parameters.num_workers = 1
    status = solver.solve(model)
    chosen: dict[str, Counter] = defaultdict(Counter)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return chosen
    for (sw, p), v in x.items():
        if solver.value(v):
            chosen[sw][p] = solver.value(v)
    return chosen


def bind(cluster: Cluster, found: list[Pattern], chosen: dict[str, Counter]) -> list[Assignment]:
    """Give each chosen pattern copy concrete cards, node by node so an instance's cards stay close."""
    pool: dict[tuple[str, str], list[Card]] = defaultdict(list)
    for card in sorted(cluster.cards, key=lambda c: (c.node, c.index)):
        pool[card.switch, card.type.name].append(card)
    assignments = []
    for sw, copies in chosen.items():
        for p, count in sorted(copies.items(), key=lambda kv: -len(found[kv[0]].types)):
            for _ in range(count):
                cards = [pool[sw, t].pop(0) for t in found[p].types]
                assignments.append(Assignment(cards, found[p].result))
    return assignments
