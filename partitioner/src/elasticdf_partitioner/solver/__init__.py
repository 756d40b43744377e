"""The Elastic-DF solver: fold -> segment/place -> replicate, then build the Plan.

`solve()` is the one entry point. The steps live in their own modules:
stages.py (fold), pack.py (segment and place on a card group, with routes.py, placers.py and state.py),
replicate.py (spread over the cluster), bound.py (a proven upper bound), build.py (the Plan). exact.py is the
same problem as a MILP and exact_search.py its search over multisets of instance levels (for the zoo models):
references for benchmarks and tests. Only --certify asks exact_search's necessary tests (no MILP) whether any
plan could lie between a plan and its LP bound.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from contextlib import contextmanager

from ..catalog import Limits
from ..cluster import Cluster
from ..errors import InputError
from ..graph import ModelGraph
from ..plan import Plan
from ..resources import Resources
from .bound import fps_bound, fps_per_resource
from .build import build_plan, explain_infeasible
from .pack import GroupPacker, PackSettings
from .replicate import Assignment, bind, choose_patterns, patterns, solve_small
from .stages import Pipeline, build_pipeline
from .state import GroupState

OBJECTIVES = ("throughput", "latency", "cost")
MAX_LEVELS = 32


def candidate_levels(pipeline: Pipeline, max_levels: int = MAX_LEVELS, max_cycles: float = float("inf")) -> list[int]:
    """Cycle budgets worth trying, ascending; thinned geometrically when there are many. `max_cycles` drops
    the levels too slow for a latency floor."""
    fastest = pipeline.min_level()
    levels = [lv for lv in pipeline.levels() if fastest <= lv <= max_cycles]
    if len(levels) <= max_levels:
        return levels
    ratio = (levels[-1] / levels[0]) ** (1 / (max_levels - 1))
    kept, nxt = [], levels[0]
    for lv in levels:
        if lv >= nxt:
            kept.append(lv)
            nxt = lv * ratio
    published = [o.cycles for o in pipeline.published if o is not None]
    if len(published) == len(pipeline.stages) and max(published) <= max_cycles:
        kept.append(max(published))
    return sorted(set(kept))


@contextmanager
def _collection_paused():
    """The cyclic garbage collector off while planning: a 10,000-card plan makes ~10^5 instances, and each full
    collection walked every object made so far and every plan still held (most of a re-plan's time); what
    planning makes is kept or freed by reference counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_collection_paused()
def solve(graph: ModelGraph, cluster: Cluster, objective: str = "throughput", target_fps: float | None = None,
          limits: Limits | None = None, settings: PackSettings | None = None, certify: bool = False) -> Plan:
    """The plan for `graph` on `cluster`. With `certify` the bound is also the LP over instance
    configurations (colgen.py; seconds, not milliseconds), and a plan that reaches it is marked optimal."""
    if objective not in OBJECTIVES:
        raise InputError("objective", f"unknown objective {objective!r}", list(OBJECTIVES))
    if objective == "cost" and not target_fps:
        raise InputError("target-fps", "objective 'cost' needs a target fps > 0")
    started = time.perf_counter()
    limits = limits or Limits()
    settings = settings or PackSettings()
    pipeline = build_pipeline(graph)
    fclk = max(c.type.fclk_mhz for c in cluster.cards)
    ratios = fps_per_resource(pipeline, fclk)
    usable = _usable_total(cluster, limits)
    bound = fps_bound(pipeline, usable, fclk)
    bound_method = "resource"
    if certify:
        from .colgen import lp_bound  # only here: a plan without --certify need not load it

        lp = lp_bound(pipeline, cluster, limits, settings)
        bound, bound_method = min(bound, lp), "lp" if lp < bound else bound_method
    floor_cycles = fclk * 1e6 / settings.min_instance_fps if settings.min_instance_fps else float("inf")
    levels = candidate_levels(pipeline, max_cycles=floor_cycles)
    if not levels:
        raise InputError("min-instance-fps", f"no folding of {graph.name} reaches {settings.min_instance_fps:,.0f} "
                         f"fps per instance; the fastest reaches {fclk * 1e6 / pipeline.min_level():,.0f} fps")
    args = (pipeline, cluster, limits, ratios, levels, settings)
    optimal = False
    if objective == "latency":
        assignments = _fastest_first(*args)
    elif objective == "throughput" and len(cluster.cards) <= 2:
        assignments, optimal = solve_small(*args)
    else:
        found = patterns(*args)
        chosen = choose_patterns(cluster, found, target_fps if objective == "cost" else None)
        if objective == "cost" and not chosen:
            most = sum(found[p].result.fps * n for copies in choose_patterns(cluster, found, None).values()
                       for p, n in copies.items())
            raise explain_infeasible(pipeline, cluster, limits, target_fps, most)
        assignments = bind(cluster, found, chosen)
    assignments = [a for a in assignments if a.result.placements]
    if not assignments:
        raise explain_infeasible(pipeline, cluster, limits, target_fps)
    total = sum(p.fps for a in assignments for p in a.result.placements)
    optimal = optimal or (objective == "throughput" and total >= bound * (1 - 1e-9))
    if certify and objective == "throughput" and not optimal:
        optimal = _nothing_between(pipeline, cluster, limits, settings, total, bound)
    plan = build_plan(graph, pipeline, cluster, assignments, objective, bound, optimal,
                      time.perf_counter() - started)
    plan.bound_method = bound_method
    plan.min_instance_fps = settings.min_instance_fps or None
    if objective == "cost" and plan.total_fps + 1e-6 < target_fps:
        raise explain_infeasible(pipeline, cluster, limits, target_fps, plan.total_fps)
    return plan


def _nothing_between(pipeline: Pipeline, cluster: Cluster, limits: Limits, settings: PackSettings, total: float,
                     bound: float) -> bool:
    """Whether no plan can lie between the plan's `total` fps and the proven `bound`: a plan's fps is a sum of
    instance fps, clock / level, so only a few sums may lie in a narrow gap (ResNet-50 on a U280 at a 1,900 fps
    floor: one 1,993 fps instance against an LP bound 0.02 % above it), and exact_search's necessary tests rule
    them out without a MILP. Instances run at their card's clock: with clocks that differ the sums are others."""
    if len({c.type.fclk_mhz for c in cluster.cards}) > 1:
        return False
    from .exact_search import LevelSearch  # only --certify asks: a plan without it need not load it

    return not LevelSearch(pipeline, cluster, limits, settings).better_may_exist(total, bound)


def _usable_total(cluster: Cluster, limits: Limits) -> Resources:
    """What all cards offer: one card of each type, times its count (10,000 cards need not be walked)."""
    counts = Counter(c.type.name for c in cluster.cards)
    one = {c.type.name: c for c in cluster.cards}
    total = Resources()
    for name, count in counts.items():
        total = total + GroupState.fresh([one[name]], cluster.catalog, limits).free_total().scale(count)
    return total


def _fastest_first(pipeline, cluster, limits, ratios, levels, settings) -> list[Assignment]:
    """Latency objective: the fastest level at which one instance fits on the fewest cards; every other card
    then runs throughput-packed instances."""

    one = PackSettings(**{**settings.__dict__, "max_instances": 1})
    by_node = sorted(cluster.cards, key=lambda c: (c.switch, c.node, c.index))
    for level in levels:
        for size in range(1, min(settings.max_cards_per_instance, len(by_node)) + 1):
            tried = set()
            for start in range(0, len(by_node) - size + 1):
                group = by_node[start:start + size]
                shape = tuple(c.type.name for c in group)
                if len({c.switch for c in group}) > 1 or shape in tried:
                    continue
                tried.add(shape)
                result = GroupPacker(pipeline, group, cluster.catalog, limits, ratios, one).solve([level])
                if result.placements:
                    rest = [c for c in cluster.cards if c not in group]
                    extra = []
                    if rest:
                        sub = Cluster(rest, cluster.switches, cluster.costs, cluster.catalog)
                        found = patterns(pipeline, sub, limits, ratios, levels, settings)
                        extra = bind(sub, found, choose_patterns(sub, found, None))
                    return [Assignment(group, result)] + extra
    return []
