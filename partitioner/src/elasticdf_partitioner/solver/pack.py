"""Step 2+3 (segment, place): pack instances of the pipeline onto a small group of cards.

The search is a depth-first branch and bound over instances (placers.py places one along a route, routes.py
lists the routes, state.py holds what is left). In exhaustive mode it branches over every level, route, cut
position and option, so its answer is optimal. In fast mode every instance of the group gets one level with
a balanced option choice; each level is first dived (the first placement at each depth), then the three best
levels get a depth-first search within a node budget and a dive that fills what they leave with instances of
slower levels; where few instances of a level fit the group, each SLR an instance spans gets its own balanced
option choice in a further dive (placers.RunPlacer, at levels between the thinned candidates too), which fills
what they leave with slower instances placed the same way. A card alone also gets two instances that run its SLRs
in opposite directions, each SLR holding the start of one and the end of the other (placers.SpreadPlacer). One option
choice per level can miss what mixing options does (an LUT-heavy variant on one SLR,
a DSP-heavy one on the next: exact_bench.py found a 10-stage problem the fast mode called infeasible), so on
pipelines of at most WIDER_STAGES stages and few option combinations two searches follow, each starting from
the best plan so far: instances of one level placed together along one of the longest routes, each SLR of it
shared by all of them and each instance with its own options (placers.SharedRoutePlacer, within
SHARED_STEP_BUDGET steps), then an exhaustive search within WIDER_NODE_BUDGET placements. Either way the result
is feasible by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..catalog import Catalog, Limits
from ..cluster import Card
from ..resources import Resources
from .placers import GreedyPlacer, InstancePlacer, Placement, RunPlacer, SharedRoutePlacer, SpreadPlacer, Steps
from .routes import routes
from .stages import Pipeline
from .state import EPS, GroupState

FILL_LEVELS = 6  # slower levels tried when filling what the best level leaves, spread over the slower range
# A filler instance must run at least 1/FILL_SLOWDOWN of the main instances' speed: a much slower one adds
# little fps for its pods, wiring and VNx stacks, and the gateway would route to it as to any other. A run
# dive's main instance that needs several cards counts per card (see GroupPacker._slowest_filler).
FILL_SLOWDOWN = 4
# The exhaustive placer's walk branches over every option of every stage, and the node budget does not bound
# the walks that fail: cheap for a dozen stages of a few options, hopeless for the zoo models (19-171 stages of
# up to hundreds of options) or a small MLP of many foldings, which therefore keep the fast mode alone.
WIDER_STAGES = 12
WIDER_OPTION_COMBINATIONS = 3 ** WIDER_STAGES
WIDER_NODE_BUDGET = 300
WIDER_STEP_BUDGET = 400_000  # and of its walks (placers.Steps): 1-4 s; exact_bench #10 needs 376,000
# Levels at which at most this many instances fit the group (the count bound) also get a dive with per-SLR
# option choices (placers.RunPlacer), filled with slower instances placed the same way: there instances span
# SLRs or share them, where one option mix wastes the most. 3 missed MobileNetV1's 3 x 1,793 fps on two U280s
# (3.6 fit by the count bound); a network that fits a group dozens of times (CNV) keeps the greedy placer, as
# each instance of such a dive costs the balanced option choices of its own SLRs.
RUN_PLACER_MAX_COUNT = 12
# dives refining the level of the instances that fill a run dive (see _refined_run_dive): 4 reach MobileNetV1's
# 1,793 + 996 fps on a U280 (2: 1,793 + 929), the best the exact level search placed there
FILL_REFINE_DIVES = 4
# A group of two card types (a pair pattern of a mixed cluster) shares no balanced option choice with another
# group, and a pair is only kept where it beats its two cards apart: its run dives stay at single levels where
# at most 3 instances fit (with fillers and up to 12 they took 2x as long on the mixed rack for 0.4-2.4 % more).
MIXED_RUN_MAX_COUNT = 3
# A card alone also gets two instances running its SLRs in opposite directions (see _opposite_pair): the first at
# up to OPPOSITE_LEVELS of the fastest candidate levels, the second at the fastest level that fits what it leaves,
# scanned from the fastest up within OPPOSITE_PROBES placements (fitting is not monotone in the level: a RunPlacer
# walk at a slower level takes other runs; MobileNetV1 on a U250 fits 113,592-114,336 cycles but not 125,184).
OPPOSITE_LEVELS = 2
OPPOSITE_PROBES = 16
# A second pass of run dives has its main instances at every level of the pipeline up to this much slower than
# the fastest candidate: candidate levels are thinned geometrically (MobileNetV1: 111,561 then 197,136 cycles),
# and a main instance 4 % slower can leave room for a filler twice as fast (MobileNetV1 on a U200: 1,725 + 498
# fps where the candidates place 1,793 + 195).
MAIN_SPAN = 1.1
# A run dive that beats the best so far with fillers is dived again with its main instance at the levels of the
# pipeline between the candidate levels, filled from its filler's level on at this many levels of the pipeline
# (see _refined_main): ResNet-50 on a U250 places 1,993 + 886 fps at 100,352 + 225,792 cycles, 8 and 4 levels
# away from the candidates' 1,736 + 997.
FINE_FILLERS = 6
# recursion frames a shared-route search may take: two per stage and instance placed together (SharedRoutePlacer's
# _fill and _fill_here), under Python's limit of 1,000 with its callers' (a 12-layer FINN net on two U280s fits
# thousands of instances: counting up from one, the search ran out of stack at about 40)
SHARED_MAX_FRAMES = 800
SHARED_STEP_BUDGET = 20_000  # steps of the shared-route searches (placers.SharedRoutePlacer): a fit is found in
# tens or hundreds (exact_bench #1: 52, #10: 517), a count that does not fit would take the whole budget


@dataclass
class GroupResult:
    placements: list[Placement]
    fps: float
    optimal: bool
    nodes: int


@dataclass
class PackSettings:
    max_cards_per_instance: int = 4
    exhaustive: bool = False
    node_budget: int = 400
    exhaustive_node_budget: int = 200_000
    exhaustive_step_budget: float = math.inf  # steps of the exhaustive walks (placers.Steps); past it: not optimal
    max_instances: int | None = None
    exclusive_cards: bool = False  # each card hosts segments of one instance only
    min_instance_fps: float = 0.0  # latency floor: no instance slower than this


class GroupPacker:
    def __init__(self, pipeline: Pipeline, cards: list[Card], catalog: Catalog, limits: Limits,
                 ratios: Resources, settings: PackSettings, uplinks: dict[str, float] | None = None):
        self.pipeline = pipeline
        self.cards = cards
        self.catalog = catalog
        self.limits = limits
        self.ratios = ratios  # proven fps per unit of each resource (see bound.py)
        self.settings = settings
        self.routes = routes(cards, min(settings.max_cards_per_instance, len(cards)))
        self.uplinks = uplinks
        self._one_type = len({card.type.name for card in cards}) == 1  # see MIXED_RUN_MAX_COUNT

    def _bound(self, state: GroupState) -> float:
        free = state.free_total()
        return min((f * r for f, r in zip(free, self.ratios) if r < math.inf), default=math.inf)

    def solve(self, levels: list[int], floor: float = 0.0) -> GroupResult:
        """Best packing found; in fast mode levels that cannot beat `floor` fps are not searched."""
        if self.settings.exhaustive and self.settings.exhaustive_step_budget == math.inf:
            return self._search(levels, dive=False)
        best = self._fast(levels, floor)
        small = self._small_option_space(levels)
        if small:
            best = self._shared(levels, best, floor)
        if self.settings.exhaustive:  # within a step budget: the plan so far first, to prune by
            searched = self._search(levels, dive=False, incumbent=best)
            return searched if searched.fps > best.fps + EPS or searched.optimal else best
        if not small:
            return best
        wider = self._search(levels, dive=False, exhaustive=True, budget=WIDER_NODE_BUDGET,
                             step_budget=WIDER_STEP_BUDGET, incumbent=best)
        return GroupResult(wider.placements, wider.fps, False, best.nodes + wider.nodes)

    def _shared(self, levels: list[int], incumbent: GroupResult, floor: float) -> GroupResult:
        """`incumbent`, or more instances of one level sharing one of the longest routes (each SLR of it holds
        a part of every instance: placers.SharedRoutePlacer), as many as fit within SHARED_STEP_BUDGET, at least
        as many as beat `floor` and at most SHARED_MAX_FRAMES allow."""
        if self.settings.exclusive_cards or not levels:  # instances that share a card
            return incumbent
        longest = max(len(route) for route in self.routes)
        empty = GroupState.fresh(self.cards, self.catalog, self.limits, self.uplinks)
        steps, best = Steps(SHARED_STEP_BUDGET), incumbent
        for route in (r for r in self.routes if len(r) == longest):
            clock = min(self.cards[c].type.fclk_mhz for c, _ in route) * 1e6
            for level in levels:
                # the fewest that beat the best so far and the floor (a pair is only kept where it beats its cards)
                count = math.floor(max(best.fps, floor) * level / clock + 1e-9) + 1
                most = min(self._count_bound(empty, level) + 1e-9,  # infinite where an instance needs nothing
                           SHARED_MAX_FRAMES // (2 * len(self.pipeline.stages)))
                if self.settings.max_instances is not None:
                    most = min(most, self.settings.max_instances)
                while count <= most and not steps.exhausted:
                    placer = SharedRoutePlacer(self.pipeline, self._placing_state(), level, steps)
                    placements = placer.feasible_level() and placer.place_together(route, count)
                    if not placements:
                        break
                    best = GroupResult(placements, sum(p.fps for p in placements), False, incumbent.nodes)
                    count += 1
        return best

    def _small_option_space(self, levels: list[int]) -> bool:
        """Whether an exhaustive walk stays cheap: few stages, few option combinations at the slowest level."""
        if len(self.pipeline.stages) > WIDER_STAGES or not levels:
            return False
        fronts = (len(self.pipeline.pareto(s, max(levels))) for s in range(len(self.pipeline.stages)))
        return math.prod(fronts) <= WIDER_OPTION_COMBINATIONS

    def _fast(self, levels: list[int], floor: float) -> GroupResult:
        """One balanced option choice per level: dives (at levels that may beat `floor`), then bounded searches and
        fills at the best levels.
        Greedy placers whatever the settings' mode: it is the exhaustive search's incumbent too (run with the
        exhaustive placers, its dives and node budget took seconds and found less: exact_bench #4)."""
        fclk = max(c.type.fclk_mhz for c in self.cards) * 1e6
        empty = GroupState.fresh(self.cards, self.catalog, self.limits, self.uplinks)
        ranked = sorted(((self._level_bound(level, fclk, empty), level) for level in levels), reverse=True)
        dives: list[tuple[float, int, GroupResult]] = []
        best_fps, nodes = floor, 0
        for bound, level in ranked:
            if bound <= best_fps + EPS:
                break
            if floor > 0 and not self._greedy_may_beat(level, floor, empty):
                continue  # a pair is only kept where it beats its cards apart (the floor)
            result = self._search([level], dive=True, exhaustive=False)
            nodes += result.nodes
            dives.append((result.fps, level, result))
            best_fps = max(best_fps, result.fps)
        dives.sort(key=lambda d: -d[0])
        best = dives[0][2] if dives else GroupResult([], 0.0, False, 0)
        for _, level, _ in dives[:3]:
            # a bounded search at this level, and a dive that fills what it leaves with slower instances
            slower = _spread(sorted(lv for lv in levels if level < lv <= FILL_SLOWDOWN * level), FILL_LEVELS)
            for result in (self._search([level], dive=False, exhaustive=False),
                           self._search([level] + slower, dive=True, exhaustive=False)):
                nodes += result.nodes
                if result.fps > best.fps + EPS:
                    best = result
        finer = self._finer_dives(levels, best, empty)  # apart: the run dives stop at the first that beats best
        best = self._run_dives(ranked, empty, best, floor, levels)
        best = self._run_dives(self._finer_mains(levels, fclk, empty), empty, best, floor, levels)
        best = self._opposite_pair(sorted(levels), best, floor)
        best = finer if finer.fps > best.fps + EPS else best
        return GroupResult(best.placements, best.fps, False, nodes + best.nodes)

    def _greedy_may_beat(self, level: int, floor: float, empty: GroupState) -> bool:
        """Whether a greedy dive at `level` may place more than `floor` fps: it places instances of the level's one
        option choice only, at most as many as its totals fit the group (_greedy_bound). On two U280s no level's
        can beat what each card plans alone with ResNet-50 (2 x 2,270 fps), and those dives were a third of the
        pair's search. A dive below the floor mattered only through the fills after the best dives (slower
        instances in what it leaves), which could beat the floor; without such dives no plan of the certificate
        benchmark changed."""
        placer = GreedyPlacer(self.pipeline, self._placing_state(), level)
        return placer.feasible_level() and self._greedy_bound(placer, level)(empty) > floor + EPS

    def _finer_dives(self, levels: list[int], best: GroupResult, empty: GroupState) -> GroupResult:
        """`best`, or a dive at a level of the pipeline between the candidate levels next to the one of `best`'s
        fastest instance, if it beats it, where more instances fit than the run dives place. The candidates are
        thinned geometrically (solver.candidate_levels), and where many instances fit the count that fits changes
        between them (CNV on a U280: 19 instances of 14,400 cycles, 263,889 fps, between the candidates 12,544 and
        16,200, where 19 of 14,976 fit); where few fit, the run dives refine between candidates themselves."""
        if not best.placements:
            return best
        level = min(p.cycles for p in best.placements)
        if self._count_bound(empty, level) <= RUN_PLACER_MAX_COUNT:
            return best
        faster = _next_faster(level, levels)
        slower = min((lv for lv in levels if lv > level), default=level)
        for finer in [lv for lv in self.pipeline.levels() if faster < lv < slower and lv not in levels]:
            result = self._search([finer], dive=True, exhaustive=False, incumbent=best)
            if result.fps > best.fps + EPS:
                best = result
        return best

    def _finer_mains(self, levels: list[int], fclk: float, empty: GroupState) -> list[tuple[float, int]]:
        """The levels of the pipeline within MAIN_SPAN of the fastest candidate that are not candidates, ranked
        like the candidates (by bound, then the slower first)."""
        finer = [lv for lv in self.pipeline.levels() if levels[0] < lv <= MAIN_SPAN * levels[0] and lv not in levels]
        return sorted(((self._level_bound(level, fclk, empty), level) for level in finer), reverse=True)

    def _run_dives(self, ranked: list[tuple[float, int]], empty: GroupState, best: GroupResult,
                   floor: float, candidates: list[int]) -> GroupResult:
        """`best`, or a dive of per-SLR option choices (placers.RunPlacer) at a level that can beat it and `floor`
        and of which few instances fit, fastest bound first, that fills what its instances leave with slower
        ones placed the same way (a fast instance over three SLRs of a U250 and a slower one over the fourth and
        what the first left of the third: ResNet-50 1,736 + 977 fps, where one option choice per level fits
        1,736 + 498); groups of two card types dive without fillers (MIXED_RUN_MAX_COUNT). The first that beats
        them ends the search, refined between the candidate levels. (Going on past it found more on two U280s,
        ResNet-50 4,520 instead of 3,986 fps, but took twice as long on every ResNet-50 group; with fillers
        counted per card, see _slowest_filler, the first dive there finds 3,986 + 651, refined to 3,986 + 880.)"""
        for bound, level in ranked:
            # a pair of cards is only kept where it beats its two cards apart (the floor)
            if bound <= max(best.fps, floor) + EPS:
                break
            count = self._count_bound(empty, level)
            if count < 1 - EPS or count > (RUN_PLACER_MAX_COUNT if self._one_type else MIXED_RUN_MAX_COUNT):
                continue  # not even one instance has the least resources of the level, or many instances fit
            slowest = self._slowest_filler(empty, level)
            fillers = [lv for lv in candidates if level < lv <= slowest] if self._one_type else []
            slower = _spread(fillers, FILL_LEVELS)
            result = self._search([level] + slower, dive=True, exhaustive=False, incumbent=best,
                                  placer_type=RunPlacer, filling=True)
            if result.fps > best.fps + EPS:
                return self._refined_main(self._refined(result, level, slower, candidates), level, candidates, empty)
        return best

    def _refined_main(self, found: GroupResult, level: int, candidates: list[int], empty: GroupState) -> GroupResult:
        """`found` (a refined run dive at `level` with fillers), or a run dive with its main instance at the fastest
        level of the pipeline between the next faster candidate and `level` at which it still leaves room for a
        filler, filled from `found`'s filler level on, if that beats it. A faster main instance leaves less room,
        so its best filler is slower; room is about monotone in the main level, so a binary search finds that
        level. ResNet-50 on a U55C places 1,772 + 498 fps at 112,896 cycles, where the candidate 115,200 places
        1,736 + 498 and 100,352-107,648 leave no room for a filler; on a U250 the fastest, 100,352, places 1,993 +
        886 where the candidate places 1,736 + 997. (Diving every main level between the candidates found no
        more on the zoo and took 1.5-2.6 times as long on one card.)"""
        filler = min((p.cycles for p in found.placements if p.cycles > level), default=None)
        if filler is None:
            return found
        levels = self.pipeline.levels()
        faster = _next_faster(level, candidates)
        mains = [lv for lv in levels if faster < lv < level]
        best = found
        while mains:
            middle = len(mains) // 2
            main = mains[middle]
            slowest = self._slowest_filler(empty, main)
            fillers = [lv for lv in levels if filler <= lv <= slowest][:FINE_FILLERS]
            result = self._search([main] + fillers, dive=True, exhaustive=False, placer_type=RunPlacer, filling=True)
            if any(p.cycles > main for p in result.placements):  # room for a filler: a faster main may have some
                best = result if result.fps > best.fps + EPS else best
                mains = mains[:middle]
            else:
                mains = mains[middle + 1:]
        return best

    def _slowest_filler(self, empty: GroupState, level: int) -> float:
        """The slowest level a run dive at `level` fills with: FILL_SLOWDOWN times slower per card an instance of
        `level` needs at least (by the count bound, each resource alone), as its pods, wiring and VNx stacks are
        that many cards' worth. ResNet-50's 3,986 fps instance over two U280s leaves one SLR and scraps, which an
        880 fps filler takes (4,866 fps, where each card alone runs 1,736 + 498: 4,469), 4.5 x slower than it."""
        count = self._count_bound(empty, level)
        cards = math.ceil(len(self.cards) / count - 1e-9) if count > 0 else 1
        return FILL_SLOWDOWN * max(cards, 1) * level

    def _opposite_pair(self, levels: list[int], best: GroupResult, floor: float) -> GroupResult:
        """`best`, or two instances on a card alone that run its SLRs in opposite directions, if they beat it and
        `floor`: the first spread over all of them (placers.SpreadPlacer) at one of the OPPOSITE_LEVELS fastest
        `levels` that can, the second back through what it leaves (placers.RunPlacer, each SLR's options
        balanced for its leftover) at the fastest level that fits. Each SLR then holds the start of one and the
        end of the other (MobileNetV1 on a U250: 3,542 fps, where one or four instances reach 3,195)."""
        settings = self.settings
        if len(self.cards) > 1 or settings.exclusive_cards or (settings.max_instances or 2) < 2:
            return best
        clock = self.cards[0].type.fclk_mhz * 1e6
        fastest = clock / self.pipeline.min_level()
        longest = max(len(route) for route in self.routes)
        spans = [route for route in self.routes if len(route) == longest > 1 and route[::-1] in self.routes]
        for level in [lv for lv in levels if clock / lv + fastest > max(best.fps, floor) + EPS][:OPPOSITE_LEVELS]:
            for route in spans:
                state = self._placing_state()
                for first in SpreadPlacer(self.pipeline, state, level).place(route):
                    mark = state.mark()
                    second = self._fastest_back(state, route[::-1], max(best.fps, floor) - first.fps, clock)
                    state.undo(mark)  # the second placement's resources: the next first is placed without it
                    if second is not None:
                        best = GroupResult([first, second], first.fps + second.fps, False, best.nodes)
        return best

    def _fastest_back(self, state: GroupState, route, beat: float, clock: float) -> Placement | None:
        """The fastest instance faster than `beat` fps that a RunPlacer places along `route` in `state`, the
        levels scanned from the fastest within OPPOSITE_PROBES placements (None if none fits). Its resources stay
        taken in `state` (its placer is left at the placement): the caller undoes them."""
        faster = [lv for lv in self.pipeline.levels() if lv >= self.pipeline.min_level() and clock / lv > beat + EPS]
        for level in faster[:OPPOSITE_PROBES]:
            placed = next(iter(RunPlacer(self.pipeline, state, level).place(route)), None)
            if placed is not None:
                return placed
        return None

    def _refined(self, found: GroupResult, level: int, slower: list[int], candidates: list[int]) -> GroupResult:
        """`found` (a run dive at `level` filled at the `slower` levels), refined between the candidate levels: at
        the level of its fastest filler where it has any, else at its own."""
        filler = min((p.cycles for p in found.placements if p.cycles > level), default=None)
        if filler is None:
            return self._refined_run_dive(_next_faster(level, candidates), level, found)
        placed_at = min(lv for lv in slower if lv >= filler)  # the candidate level the filler was placed at
        faster = max(lv for lv in [level] + slower if lv < placed_at)
        return self._refined_run_dive(faster, placed_at, found, level, [lv for lv in slower if lv > placed_at])

    def _refined_run_dive(self, faster: int, level: int, found: GroupResult, main: int | None = None,
                          slower: list[int] = ()) -> GroupResult:
        """`found` (a run dive at `level`), or a better one at a level of the pipeline between the next faster
        candidate level and `level`: the candidates are thinned geometrically (solver.candidate_levels), and
        where one instance spans a group each finer level it reaches is that much more fps (ResNet-50 on a
        U280: 1,993 fps between the candidates 2,278, which does not fit, and 1,736). A binary search over
        them, faster while a dive beats the best so far. With `main`, `level` is that of the fastest instances
        filling what instances of `main` leave, and the dives fill with the `slower` levels after it, within
        FILL_REFINE_DIVES dives (MobileNetV1 on a U280: 1,793 + 799 fps at the candidates, 1,793 + 929 after two
        dives, 1,793 + 996 after four, each placing the 1,793 fps instance again)."""
        finer = [lv for lv in self.pipeline.levels() if faster < lv < level]
        probes = math.inf if main is None else FILL_REFINE_DIVES
        while finer and probes > 0:
            probes -= 1
            middle = len(finer) // 2
            levels = [finer[middle]] if main is None else [main, finer[middle], *slower]
            result = self._search(levels, dive=True, exhaustive=False, incumbent=found, placer_type=RunPlacer,
                                  filling=main is not None)
            if result.fps > found.fps + EPS:
                found, finer = result, finer[:middle]
            else:
                finer = finer[middle + 1:]
        return found

    def _level_bound(self, level: int, fclk: float, empty: GroupState) -> float:
        return min(self._bound(empty), fclk / level * self._count_bound(empty, level))

    def _greedy_bound(self, placer: GreedyPlacer, level: int):
        """Fast mode places only instances of one fixed option choice: at most as many as its totals fit."""
        need = Resources(*placer.prefix[-1])
        fps = max(c.type.fclk_mhz for c in self.cards) * 1e6 / max(o.cycles for o in placer.choice)

        def bound(state: GroupState) -> float:
            free = state.free_total()
            count = min((free[k] / need[k] for k in range(5) if need[k] > EPS), default=math.inf)
            return math.floor(count + 1e-9) * fps

        return bound

    def instance_bound(self, levels: list[int]) -> float:
        """At most this many instances of any of the levels fit the empty group: the per-resource count bound,
        tightened by the mean share over the five resources (a variant that saves one resource spends another,
        which the per-resource bound cannot see)."""
        empty = GroupState.fresh(self.cards, self.catalog, self.limits, self.uplinks)
        free = empty.free_total()
        present = [k for k in range(5) if free[k] > 0]

        def mean_share(option) -> float:
            return sum(option.res[k] / free[k] for k in present) / len(present)

        most = 0.0
        for level in levels:
            fronts = [self.pipeline.pareto(s, level) for s in range(len(self.pipeline.stages))]
            if all(fronts):
                share = sum(min(mean_share(o) for o in front) for front in fronts)
                by_mean = 1 / share if share > 0 else math.inf
                most = max(most, min(by_mean, self._count_bound(empty, level)))
        return min(most, len(self.cards)) if self.settings.exclusive_cards else most

    def _count_bound(self, state: GroupState, level: int) -> float:
        need = self.pipeline.least_resources(level)
        if need is None:
            return 0
        free = state.free_total()
        return min((free[k] / need[k] for k in range(5) if need[k] > 0), default=math.inf)

    def _placing_state(self) -> GroupState:
        """The empty group as placements see it: the settings' exclusive cards and latency floor."""
        state = GroupState.fresh(self.cards, self.catalog, self.limits, self.uplinks, self.settings.exclusive_cards)
        state.min_fps = self.settings.min_instance_fps
        return state

    def _search(self, levels: list[int], dive: bool, exhaustive: bool | None = None,
                budget: int | None = None, step_budget: float | None = None,
                incumbent: GroupResult | None = None, placer_type: type[GreedyPlacer] = GreedyPlacer,
                filling: bool = False) -> GroupResult:
        """Depth-first search over instances; a dive keeps only the first placement found at each depth.
        `exhaustive`, `budget` and `step_budget` default to the settings' mode and budgets; only packings better
        than `incumbent` are searched for (it is the result if none is found). Fast mode places with `placer_type`.
        `filling`: the levels after the first only fill what instances of the first leave (none without them)."""
        exhaustive = self.settings.exhaustive if exhaustive is None else exhaustive
        state = self._placing_state()
        steps = Steps(self.settings.exhaustive_step_budget if step_budget is None else step_budget)
        if exhaustive:
            placers = [InstancePlacer(self.pipeline, state, lv, True, steps) for lv in levels]
            bound = self._bound
        else:
            placers = [placer_type(self.pipeline, state, lv) for lv in levels]
            # the fixed option choice's totals bound only instances that all use it
            single = len(levels) == 1 and placers[0].feasible_level() and placer_type is GreedyPlacer
            bound = self._greedy_bound(placers[0], levels[0]) if single else self._bound
        best: list = [incumbent.fps, incumbent.placements] if incumbent else [0.0, []]
        if filling and not placers[0].feasible_level():
            return GroupResult(best[1], best[0], False, 0)
        placers = [p for p in placers if p.feasible_level()]
        current: list[Placement] = []
        nodes = [0]
        complete = [True]
        if budget is None:
            budget = self.settings.exhaustive_node_budget if exhaustive else self.settings.node_budget

        def dfs(first_placer: int, first_route: int, fps: float, last_key: tuple = (),
                failed: frozenset = frozenset()) -> None:
            # resources only shrink down the tree, so a route that failed here fails in every subtree too
            if fps > best[0] + EPS:
                best[0], best[1] = fps, list(current)
            if self.settings.max_instances is not None and len(current) >= self.settings.max_instances:
                return
            if fps + bound(state) <= best[0] + EPS:
                return
            for pi in range(first_placer, len(placers)):
                if filling and pi > 0 and not current:
                    return
                if filling and pi > 0 and self._count_bound(state, placers[pi].level) < 1 - EPS:
                    continue  # no route can hold a filler of this level: spare the walks
                start = first_route if pi == first_placer else 0
                failed_here = set(failed)
                if not exhaustive and not dive:
                    failed_here |= {(pi, ri) for ri in range(start, len(self.routes)) if (pi, ri) not in failed
                                    and not list(placers[pi].place(self.routes[ri]))}  # runs each walk to its undo
                for ri in range(start, len(self.routes)):
                    if (pi, ri) in failed_here:
                        continue
                    for placement in placers[pi].place(self.routes[ri]):
                        key = placement.key()
                        if pi == first_placer and ri == first_route and key < last_key:
                            continue
                        nodes[0] += 1
                        if nodes[0] > budget:
                            complete[0] = False
                            return
                        current.append(placement)
                        dfs(pi, ri, fps + placement.fps, key, frozenset(failed_here))
                        current.pop()
                        if nodes[0] > budget or dive:
                            return

        dfs(0, 0, 0.0)
        return GroupResult(best[1], best[0], complete[0] and not steps.exhausted, nodes[0])


def _next_faster(level: int, levels: list[int]) -> int:
    """The slowest of `levels` faster than `level`, 0 if none: where the levels between candidates start."""
    return max((lv for lv in levels if lv < level), default=0)


def _spread(values: list[int], count: int) -> list[int]:
    """At most `count` of the sorted values, evenly spaced from the first to the last."""
    if len(values) <= count:
        return values
    return [values[round(i * (len(values) - 1) / (count - 1))] for i in range(count)]
