"""Placing one instance of the pipeline along a route.

InstancePlacer (exhaustive) yields every placement: each SLR of the route takes any run of stages, each stage
any Pareto-optimal option. GreedyPlacer (fast) yields at most one: every stage uses its balanced option and
each SLR takes the longest run that fits; RunPlacer (fast) balances the options of each SLR's run for that
SLR instead, and SpreadPlacer spreads an instance over every SLR of its route so that a second can run the route
back through what it leaves. Either way a placement is feasible by construction and holds its
resources in the GroupState until the caller resumes the generator. SharedRoutePlacer places several instances
of one level together along one route (each SLR shared by all of them), searching their options stage by stage.
"""

from __future__ import annotations

import copy
import itertools
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..resources import Resources
from .routes import Route
from .stages import Pipeline, StageOption
from .state import EPS, GroupState

# The power of the utilisations in the tie-break of balanced_order's second search (a power of two): the resources
# nearest the worst are relieved first (4 and 16 place the same zoo plans; 1 is the first search's tie-break).
TIE_POWER = 8
TIE_WEIGHTS = np.full(5, 1e-6)  # a tie-break's weight per resource


@dataclass(frozen=True)
class Piece:
    card: int  # index in the group
    slr: int
    first: int  # stage indices, inclusive; first > last marks a pass-through
    last: int
    options: tuple[StageOption, ...]


@dataclass(frozen=True)
class Placement:
    pieces: tuple[Piece, ...]
    cycles: int
    fclk_mhz: float
    card_cuts: tuple[tuple[int, int, int, float], ...]  # (from card, to card, position, gbps)

    @property
    def fps(self) -> float:
        return self.fclk_mhz * 1e6 / self.cycles

    def key(self) -> tuple:
        """A total order on placements, used to enumerate multisets of instances only once."""
        return tuple((p.card, p.slr, p.first, p.last, tuple((o.cycles, o.res) for o in p.options))
                     for p in self.pieces)


def balanced_order(opts: list[list[StageOption]], capacity: Resources,
                   table: np.ndarray | None = None) -> list[list[StageOption]]:
    """Rank each stage's options so the first ones together use the group's resources evenly.

    Local search on the instance's worst utilisation: starting from the options cheapest relative to
    capacity, repeatedly switch the one stage option that lowers max_r(demand_r / capacity_r) the most.
    LUT-hungry variants thereby give way to DSP or URAM ones exactly as far as LUT is the binding resource.
    `table`: the options' resources as rows, stage by stage (see _option_rows), if the caller has them.
    """
    switches = _Switches(opts, capacity, table)
    chosen = switches.balanced()
    # per stage its chosen option, then the others cheapest first (ties in their order: a stable sort)
    cheap = switches.cheap.copy()
    cheap[chosen] = -np.inf
    flat = list(itertools.chain.from_iterable(opts))
    ranked = [flat[i] for i in np.lexsort((cheap, switches.stage_of)).tolist()]
    return [ranked[first:first + len(options)] for first, options in zip(switches.first, opts)]


class _Switches:
    """balanced_order's search. Switching a stage from its option c to its option j adds column j of the block of c
    (rel[:, j] - rel[:, c] for every j of the stage) to the instance's utilisation. Every candidate's block is
    computed once, so a step of the search weighs every switch at once with a few whole-array operations and then
    copies one block in (this search is most of a first plan's time)."""

    def __init__(self, opts: list[list[StageOption]], capacity: Resources, table: np.ndarray | None):
        if table is None:
            table = _resource_rows(opts)
        self.sizes = [len(options) for options in opts]
        cap = np.array([c if c > EPS else EPS for c in capacity])
        # resources x candidates (every stage's options, stage by stage): each candidate's share of the capacity
        self.rel = np.ascontiguousarray((table / cap).T)
        self.cheap = self.rel.sum(axis=0)
        (self.stage_of, self.starts, self.offsets, column, owner,
         self.stage, self.first, self.offset) = _switch_index(tuple(self.sizes))
        self.blocks = np.ascontiguousarray(self.rel[:, column] - self.rel[:, owner])

    def balanced(self) -> list[int]:
        """Per stage the candidate the search ends at: from the first of the least relative cost, then relieving
        ties where that overfills the capacity."""
        least = np.flatnonzero(self.cheap == np.minimum.reduceat(self.cheap, self.starts)[self.stage_of])
        chosen = least[np.unique(self.stage_of[least], return_index=True)[1]].tolist()
        utilisation = self.descend(chosen)
        if utilisation.max() > 1:
            self.relieve_ties(chosen, utilisation)
        return chosen

    def _moves(self, blocks: np.ndarray, chosen: list[int]) -> np.ndarray:
        """Per candidate what switching to it adds, with `chosen` (one candidate per stage) as the options now."""
        stage_of = self.stage_of
        at = self.offsets[np.asarray(chosen)[stage_of]] + np.arange(len(stage_of)) - self.starts[stage_of]
        return np.ascontiguousarray(blocks[:, at])

    def _switch(self, moves: np.ndarray, blocks: np.ndarray, chosen: list[int], best: int) -> int:
        """Switch `best`'s stage to it: its moves become those of `best`'s block. Returns the column of the blocks
        that holds what the switch adds to the utilisation."""
        s = self.stage[best]
        first, size, was = self.first[s], self.sizes[s], self.offset[chosen[s]]
        at = self.offset[best]
        moves[:, first:first + size] = blocks[:, at:at + size]
        chosen[s] = best
        return was + best - first

    def descend(self, chosen: list[int]) -> np.ndarray:
        """The search from `chosen` (updated in place), scored by the worst utilisation with the total as the
        tie-break; returns the utilisation it ends at. The tie-break rides in each move: max_r(u_r + m_r) + t is
        max_r(u_r + m_r + t)."""
        utilisation = self.rel[:, chosen].sum(axis=1, keepdims=True)
        score = float(_score(utilisation[:, 0]))
        tie_breaks = 1e-6 * self.blocks.sum(axis=0)
        weighed = self.blocks + tie_breaks
        moves = self._moves(weighed, chosen)
        tie = 1e-6 * float(utilisation.sum())
        util, scores = np.empty(moves.shape), np.empty(moves.shape[1])
        for _ in range(4 * len(self.sizes)):
            np.add(moves, utilisation, out=util)
            util.max(axis=0, out=scores)
            best = int(scores.argmin())
            switched = float(scores[best]) + tie
            if not switched < score - 1e-12:
                break
            at = self._switch(moves, weighed, chosen, best)
            utilisation += self.blocks[:, at:at + 1]
            tie += float(tie_breaks[at])
            score = switched
        return utilisation

    def relieve_ties(self, chosen: list[int], utilisation: np.ndarray) -> None:
        """The search once more, on a choice that overfills the capacity, with the sum of the utilisations'
        TIE_POWER-th powers as the tie-break (updates `chosen` in place). Where two resources tie at the worst no
        single switch lowers it, and the total as the tie-break only takes switches that lower the total: the
        search stopped with LUTs and DSPs both just over an SLR (ResNet-50 on a U200: 1,772 fps over its three
        SLRs where options balanced this way place 1,993). The power relieves the resource nearest the worst
        first (LUTs for URAM), and the next switch can then lower the other. Only where the choice does not fit:
        the power costs each step a few array operations, and where the choice fits its switches changed no
        plan."""
        moves = self._moves(self.blocks, chosen)
        util, power = np.empty_like(moves), np.empty_like(moves)
        scores, total = np.empty(moves.shape[1]), np.empty(moves.shape[1])
        score = float(_score(utilisation[:, 0], TIE_POWER))
        for _ in range(4 * len(self.sizes)):
            np.add(moves, utilisation, out=util)
            util.max(axis=0, out=scores)
            np.multiply(util, util, out=power)
            for _ in range(TIE_POWER.bit_length() - 2):  # util ** TIE_POWER by repeated squaring
                power *= power
            np.dot(TIE_WEIGHTS, power, out=total)  # 1e-6 times each column's sum, in one call
            scores += total
            best = int(scores.argmin())
            if not scores[best] < score - 1e-12:
                break
            at = self._switch(moves, self.blocks, chosen, best)
            utilisation += self.blocks[:, at:at + 1]
            score = float(scores[best])


@lru_cache(maxsize=512)  # tens of kB each for ResNet-50's runs: a long-running operator keeps a bounded few
def _switch_index(sizes: tuple[int, ...]):
    """_Switches' index arrays for stages of these option counts (the same for every capacity a run is balanced
    for): each candidate's stage, each stage's first candidate, where each candidate's block starts, and per
    block column the candidate it switches to and the one it switches from; then the first three as lists."""
    stage_of = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.cumsum((0,) + sizes[:-1])
    width = np.asarray(sizes)[stage_of]
    owner = np.repeat(np.arange(len(stage_of)), width)
    offsets = np.cumsum(width) - width
    column = (starts[stage_of] - offsets)[owner] + np.arange(len(owner))
    return stage_of, starts, offsets, column, owner, stage_of.tolist(), starts.tolist(), offsets.tolist()


def _balanced_cached(pipeline: Pipeline, opts, level: int, capacity: Resources) -> list[list[StageOption]]:
    """balanced_order of all stages depends only on the proportions of the capacity, so groups of one card type
    share it."""
    key = ("balanced", level, _proportions(capacity))
    if key not in pipeline.memo:
        pipeline.memo[key] = balanced_order(opts, capacity, _option_rows(pipeline, opts)[0])
    return pipeline.memo[key]


def _resource_rows(opts: list[list[StageOption]]) -> np.ndarray:
    """Every stage's options' resources as rows, stage by stage."""
    n = sum(len(options) for options in opts)
    return np.fromiter(itertools.chain.from_iterable(o.res for options in opts for o in options), float,
                       5 * n).reshape(-1, 5)


def _option_rows(pipeline: Pipeline, opts: list[list[StageOption]]) -> tuple[np.ndarray, list[int]]:
    """_resource_rows of a level's fronts (a memoised list), and the first row of each stage (and the end): the
    runs of a walk take their rows from it instead of building them for each of their searches. The entry keeps
    `opts` itself, so its id cannot be reused by another list while the entry exists."""
    key = ("rows", id(opts))
    if key not in pipeline.memo or pipeline.memo[key][0] is not opts:
        offsets = np.cumsum([0] + [len(options) for options in opts]).tolist()
        pipeline.memo[key] = (opts, _resource_rows(opts), offsets)
    return pipeline.memo[key][1:]


def _balanced_run(pipeline: Pipeline, opts, capacity: Resources,
                  stages: tuple[int, int]) -> tuple[list[StageOption], Resources]:
    """The options balanced_order ranks first for the stages first..end-1 of `opts` (the pipeline's fronts at a
    level; its search, without ranking the rest), and their total. The search depends only on the stages' option
    lists and the proportions of the capacity, so it is memoised by those: a walk's binary search asks again for
    the runs it asked on an SLR as empty as before, and the fronts of most stages are the same lists at nearby
    levels (ResNet-50 repeats its bottlenecks, whose stages share theirs, too). The pipeline keeps its fronts'
    lists, so their ids stay theirs."""
    first, end = stages
    key = ("balanced run", tuple(map(id, opts[first:end])), _proportions(capacity))
    if key not in pipeline.memo:
        table, offsets = _option_rows(pipeline, opts)
        rows = table[offsets[first]:offsets[end]]
        switches = _Switches(opts[first:end], capacity, rows)
        chosen = switches.balanced()
        run = [options[c - start] for options, c, start in zip(opts[first:end], chosen, switches.first)]
        pipeline.memo[key] = (run, Resources(*rows[chosen].sum(axis=0).tolist()))
    return pipeline.memo[key]


@lru_cache(maxsize=4096)  # a walk asks for the proportions of the same few capacities thousands of times
def _proportions(capacity: Resources) -> tuple[float, ...]:
    top = max(capacity) or 1.0
    return tuple(round(c / top, 4) for c in capacity)


def _greedy_tables(pipeline: Pipeline, opts: list[list[StageOption]]):
    """For a memoised option order: the chosen option per stage, prefix sums of their resources (row e = the
    first e stages) and the stream width crossing each cut position."""
    key = ("greedy", id(opts))  # opts is itself memoised on the pipeline, so its id is stable
    if key not in pipeline.memo:
        choice = [options[0] for options in opts]
        res = np.fromiter(itertools.chain.from_iterable(o.res for o in choice), float, 5 * len(choice))
        prefix = np.vstack([np.zeros(5), np.cumsum(res.reshape(-1, 5), axis=0)])
        widths = [sum(choice[e.src].out_widths[e.src_pos] for e in cut) for cut in pipeline.crossings()]
        pipeline.memo[key] = (choice, prefix, widths)
    return pipeline.memo[key]


def _score(util: np.ndarray, power: int = 1) -> np.ndarray:
    """Worst utilisation first, the total of the utilisations (to `power`) as the tie-break."""
    return util.max(axis=-1) + 1e-6 * (util ** power).sum(axis=-1)


@dataclass
class Steps:
    """What the exhaustive walks of one search may cost: a walk that places nothing yields nothing, so the search's
    node budget (placements) cannot bound it, and on two 3-SLR cards such walks took minutes."""

    limit: float = math.inf
    taken: int = 0

    def take(self) -> bool:
        """Count a step; False once the limit is reached (the walks then end, placing nothing more)."""
        self.taken += 1
        return self.taken <= self.limit

    @property
    def exhausted(self) -> bool:
        return self.taken > self.limit


class InstancePlacer:
    # In fast mode a level's options are ranked by balanced_order for the whole group (GreedyPlacer places its
    # first options); RunPlacer balances each run for its own SLR and keeps the fronts as they are, whose lists
    # are what _balanced_run memoises its searches by.
    ranks_options = True

    def __init__(self, pipeline: Pipeline, state: GroupState, level: int, exhaustive: bool,
                 steps: Steps | None = None):
        self.pipeline = pipeline
        self.state = state
        self.level = level
        self.exhaustive = exhaustive
        self.steps = steps or Steps()  # shared by the walks (copies) of this placer and of the search's others
        self.opts = pipeline.fronts(level)  # memoised: shared, never changed in place
        if not exhaustive and self.ranks_options and all(self.opts):
            self.opts = _balanced_cached(pipeline, self.opts, level, state.free_total())
        self.crossing = pipeline.crossings()

    def feasible_level(self) -> bool:
        return all(self.opts)

    def place(self, route: Route) -> Iterator[Placement]:
        """Yield placements along `route` (state holds each one while the caller looks at it)."""
        if not self.state.cards_free({c for c, _ in route}):
            return
        walk = copy.copy(self)  # per-walk bookkeeping; the caller nests walks of further instances
        walk.route = route
        walk.chosen: list[StageOption | None] = [None] * len(self.pipeline.stages)
        walk.pieces: list[list] = [[route[0][0], route[0][1], 0, []]]
        walk.cuts: list[tuple[int, int, int]] = []
        yield from walk._step(0, 0)

    def _step(self, s: int, k: int) -> Iterator[Placement]:
        if not self.steps.take():
            return
        n = len(self.pipeline.stages)
        if s == n:
            if k == len(self.route) - 1 and self.pieces[-1][3]:
                placement = self._finish()
                if placement is not None:
                    yield placement
            return
        card, slr = self.route[k]
        placed_here = False
        for option in self._candidates(card, slr, s):
            mark = self.state.mark()
            self.state.take(card, slr, option.res)
            self.chosen[s] = option
            self.pieces[-1][3].append(option)
            yield from self._step(s + 1, k)
            self.pieces[-1][3].pop()
            self.state.undo(mark)
            placed_here = True
            if not self.exhaustive:
                return
        if k + 1 < len(self.route) and (s > 0 or self.pieces[-1][3]) and (self.exhaustive or not placed_here):
            yield from self._advance(s, k)

    def _candidates(self, card: int, slr: int, s: int) -> list[StageOption]:
        if self.exhaustive:
            return [o for o in self.opts[s] if self.state.fits(card, slr, o.res)]
        return next(([o] for o in self.opts[s] if self.state.fits(card, slr, o.res)), [])

    def _advance(self, s: int, k: int) -> Iterator[Placement]:
        (card, slr), (next_card, next_slr) = self.route[k], self.route[k + 1]
        mark = self.state.mark()
        if next_card == card:
            if not self.state.cross(card, slr, next_slr, self._chosen_width(s)):
                return
        else:
            if not (self.state.open_eth(card) and self.state.open_eth(next_card)):
                self.state.undo(mark)
                return
            self.cuts.append((card, next_card, s))
        self.pieces.append([next_card, next_slr, s, []])
        yield from self._step(s, k + 1)
        self.pieces.pop()
        if next_card != card:
            self.cuts.pop()
        self.state.undo(mark)

    def _chosen_width(self, position: int) -> float:
        """Bits per cycle of the streams crossing cut `position`, as the options chosen so far produce them."""
        return sum(self.chosen[e.src].out_widths[e.src_pos] for e in self.crossing[position])

    def _cycles(self) -> int:
        """The instance's cycles per frame: its slowest stage."""
        return max(o.cycles for o in self.chosen)

    def _finish(self) -> Placement | None:
        """Check network bandwidth at the instance's real rate and reserve it."""
        cycles = self._cycles()
        fclk = min(self.state.cards[c].type.fclk_mhz for c, _ in self.route)
        fps = fclk * 1e6 / cycles
        if fps < self.state.min_fps - EPS:
            return None
        cuts = []
        for src, dst, position in self.cuts:
            gbps = sum(e.bits_per_frame for e in self.crossing[position]) * fps / 1e9
            if gbps > self.state.net_out[src] + EPS or gbps > self.state.net_in[dst] + EPS \
                    or not self.state.uplink_room(src, dst, gbps):
                return None
            cuts.append((src, dst, position, gbps))
        for src, dst, _, gbps in cuts:
            self.state._set(self.state.net_out, src, self.state.net_out[src] - gbps)
            self.state._set(self.state.net_in, dst, self.state.net_in[dst] - gbps)
            self.state.use_uplinks(src, dst, gbps)
        self.state.claim({c for c, _ in self.route})
        pieces = tuple(Piece(c, slr, first, first + len(opts) - 1, tuple(opts))
                       for c, slr, first, opts in self.pieces)
        return Placement(pieces, cycles, fclk, tuple(cuts))


class GreedyPlacer(InstancePlacer):
    """Fast mode: every stage uses its best-priced option; each SLR on the route takes the longest run of
    stages that fits (prefix sums + binary search), backing off to a legal cut."""

    def __init__(self, pipeline: Pipeline, state: GroupState, level: int):
        super().__init__(pipeline, state, level, exhaustive=False)
        if not self.feasible_level():
            return
        self.choice, self.prefix, self.widths = _greedy_tables(pipeline, self.opts)
        self.run_sums: dict[tuple[int, int, int], tuple[np.ndarray, list[float]]] = {}
        self.cycles = max(o.cycles for o in self.choice)
        self.total = self.prefix[-1].tolist()

    def place(self, route: Route) -> Iterator[Placement]:
        if not self.state.cards_free({c for c, _ in route}) or not self._route_can_hold(route):
            return
        mark = self.state.mark()
        # the walk is over before its placement is yielded, so it can run on the placer itself (unlike the
        # exhaustive walk, which yields from inside and would be overwritten by the caller's next instance)
        self.route, self.chosen, self.pieces, self.cuts = route, self._fresh_choice(), [], []
        placement = self._greedy()
        if placement is not None:
            yield placement
        self.state.undo(mark)

    def _route_can_hold(self, route: Route) -> bool:
        """Whether the route's SLRs together have what the instance's options take: each SLR's run fits what it
        has left (an overdrawn one nothing), so a route with less holds no instance, and most routes a search
        tries are such (ResNet-50 on two U280s: 883 of 1,251 walks). The margin covers each SLR's EPS and the
        rounding of the run sums, so a route that holds one is never rejected. A one-SLR walk fails as fast as
        this check (a 10,000-card CNV plan walks 89,000 routes), so only longer routes are checked."""
        if len(route) == 1:
            return True
        free = [0.0] * 5
        for card, slr in route:
            for k, left in enumerate(self.state.slots[card][slr].free):
                if left > 0.0:
                    free[k] += left
        return all(need <= left * (1 + 1e-9) + 1e-6 for need, left in zip(self.total, free))

    def _greedy(self) -> Placement | None:
        n, s = len(self.choice), 0
        for k, (card, slr) in enumerate(self.route):
            last_slot = k == len(self.route) - 1
            # a card is left from its Ethernet SLR: its VNx stack goes there before the run is measured
            if not last_slot and self.route[k + 1][0] != card and not self.state.open_eth(card):
                return None
            end = self._farthest(card, slr, s)
            if end is None or last_slot and end < n or k == 0 and end == s or not last_slot and end == n:
                return None
            while not last_slot and end > s and self.route[k + 1][0] == card and not self._cut_ok(k, end):
                end -= 1
            if not last_slot and not self._cut_ok(k, end) or k == 0 and end == s:
                return None
            self.state.take(card, slr, self._run_resources(card, slr, s, end))
            self.pieces.append([card, slr, s, list(self.chosen[s:end])])
            if not last_slot:
                self._cross(k, end)
            s = end
        return self._finish()

    def _fresh_choice(self) -> list[StageOption]:
        return self.choice  # every instance of the level uses the same options: never written to

    def _cycles(self) -> int:
        return self.cycles

    def _run_resources(self, card: int, slr: int, s: int, end: int) -> Resources:
        return Resources(*self._run_sums(card, slr, s)[0][end - s].tolist())

    def _width(self, position: int) -> float:
        return self.widths[position]

    def _farthest(self, card: int, slr: int, s: int) -> int:
        """The largest end e such that stages s..e-1 fit the SLR: fits is monotone in e, so a binary search
        over the kept run sums (a walk asks this tens of thousands of times in a pattern search)."""
        slot = self.state.slots[card][slr]
        runs, shares = self._run_sums(card, slr, s)
        free, avg_free = [f + EPS for f in slot.free], slot.avg_free + EPS

        def fits(e: int) -> bool:
            return shares[e] <= avg_free and all(map(operator.le, runs[e].tolist(), free))

        if fits(len(runs) - 1):
            return len(self.choice)  # the rest of the pipeline fits: most asks of a small model's walks
        fitting, beyond = 0, len(runs) - 1  # runs[:fitting] fit, runs[beyond:] do not
        while fitting < beyond:
            mid = (fitting + beyond) // 2
            if fits(mid):
                fitting = mid + 1
            else:
                beyond = mid
        return s + fitting - 1

    def _run_sums(self, card: int, slr: int, s: int) -> tuple[np.ndarray, list[float]]:
        """Per end e >= s: the resources of stages s..e-1, and their share of this SLR's mean-utilisation
        budget; computed once per start and SLR of the group."""
        key = (card, slr, s)
        if key not in self.run_sums:
            runs = self.prefix[s:] - self.prefix[s]
            self.run_sums[key] = (runs, (runs @ self.state.avg_vector(card, slr)).tolist())
        return self.run_sums[key]

    def _cut_ok(self, k: int, position: int) -> bool:
        (card, slr), (next_card, next_slr) = self.route[k], self.route[k + 1]
        if next_card == card:
            return self._width(position) <= self.state.sll[card][(slr, next_slr)] + EPS
        eth_free = all(self.state.eth_on[c] or self.state.fits(c, self.state.cards[c].type.eth_slr,
                                                               self.state.eth_cost[c]) for c in (card, next_card))
        return eth_free

    def _cross(self, k: int, position: int) -> None:
        (card, slr), (next_card, next_slr) = self.route[k], self.route[k + 1]
        if next_card == card:
            self.state.cross(card, slr, next_slr, self._width(position))  # _cut_ok checked the room
        else:
            self.state.open_eth(card)
            self.state.open_eth(next_card)
            self.cuts.append((card, next_card, position))


class RunPlacer(GreedyPlacer):
    """Fast mode for instances that span several SLRs: each SLR's run of stages gets its own balanced option
    choice (balanced_order against that SLR's free resources), so a stretch of LUT-heavy layers can take
    DSP variants on one SLR while a DSP-heavy stretch takes LUT variants on the next, which one option choice
    for the whole instance cannot (ResNet-50 on a U280: 3 x 498 fps one per SLR, 1,993 fps over all three).
    Each run is the longest the binary search finds whose own balanced choice fits: a heuristic (fitting need
    not be monotone in the run's end), but every run placed fits, so placements stay feasible."""

    ranks_options = False

    def __init__(self, pipeline: Pipeline, state: GroupState, level: int):
        super().__init__(pipeline, state, level)
        if self.feasible_level():
            least = np.array(pipeline.least_per_stage(level))
            self.least_prefix = np.vstack([np.zeros(5), np.cumsum(least, axis=0)])  # row e: stages 0..e-1
        self.longest: dict[tuple[int, int, int], tuple[list[float], int]] = {}  # see _longest_run

    def _route_can_hold(self, route: Route) -> bool:
        """Whether the route's SLRs, in order, can reach the last stage with runs at the least each stage can use
        of each resource: a run's balanced_order costs a millisecond, and most routes of a group too big for one
        instance are too small for it. A run ends at most where _longest_run says (or passes the stream on), and
        a run from a later stage needs less, so its end is no earlier: starting each SLR where the previous could
        reach at most never rejects a route that can hold one. SLR by SLR rejects more than the route's sums
        did (MobileNetV1 on two U250s: 70 of the 796 routes they let through)."""
        return self._reach(route, 0) == len(self.choice)

    def _reach(self, slots: Route, start: int) -> int:
        """How far runs from stage `start` over these SLRs in order reach at most (see _route_can_hold)."""
        reach = start
        for card, slr in slots:
            reach = max(reach, self._longest_run(card, slr, reach))
        return reach

    def _fresh_choice(self) -> list[StageOption]:
        return list(self.choice)  # overwritten run by run with the options chosen for each SLR

    def _cycles(self) -> int:
        return max(o.cycles for o in self.chosen)

    def _run_resources(self, card: int, slr: int, s: int, end: int) -> Resources:
        if end == s:
            return Resources()  # an empty run passes the stream on
        return Resources(*np.sum([o.res for o in self.chosen[s:end]], axis=0).tolist())  # one sum, not end - s

    def _width(self, position: int) -> float:
        return self._chosen_width(position)

    def _farthest(self, card: int, slr: int, s: int) -> int | None:
        """The largest end e the binary search finds such that stages s..e-1, with options balanced for this
        SLR, fit it; those options go into self.chosen. On the route's last SLR only the whole rest is tried
        (a walk that fails there costs one balanced_order, not a binary search of them). None once every end
        the search can still find is too early for the SLRs after this one to reach the last stage from it (at
        the least each stage uses, see _route_can_hold): the walk fails, and most run searches of a plan were in
        walks that failed (ResNet-50 on two U280s: 229 of 285)."""
        capacity = self._run_capacity(card, slr)
        fitting: dict[int, list[StageOption]] = {s: []}
        most = self._longest_run(card, slr, s)
        rest = self.route[self.route.index((card, slr)) + 1:]
        n = len(self.choice)

        def fits(e: int) -> bool:
            run, need = _balanced_run(self.pipeline, self.opts, capacity, (s, e))
            if self.state.fits(card, slr, need):
                fitting[e] = run
                return True
            return False

        last = not rest  # its run must reach the last stage (_greedy): no shorter one places
        if last and most < n:
            return s
        if not last and self._reach(rest, most) < n:
            return None
        if most > s and not fits(most) and not last:
            low, high = s, most  # the run to `low` fits, the run to `high` does not
            while high - low > 1:
                if self._reach(rest, high - 1) < n:
                    return None
                mid = (low + high) // 2
                low, high = (mid, high) if fits(mid) else (low, mid)
        end = max(fitting)
        self.chosen[s:end] = fitting[end]
        return end

    def _run_capacity(self, card: int, slr: int) -> Resources:
        """What the options of a run on this SLR are balanced against: what it has free."""
        return Resources(*(f if f > 0.0 else 0.0 for f in self.state.slots[card][slr].free))

    def _longest_run(self, card: int, slr: int, s: int) -> int:
        """The end past which a run from stage s needs more of some resource than the SLR has, whatever its
        options. Kept per SLR and start while the SLR's free list is the same object (GroupState replaces it on
        every take and puts it back on undo): route checks ask again for the SLRs of the routes before them."""
        slot = self.state.slots[card][slr]
        kept = self.longest.get((card, slr, s))
        if kept is not None and kept[0] is slot.free:
            return kept[1]
        least_runs = self.least_prefix[s:] - self.least_prefix[s]
        too_big = (least_runs > np.array(slot.free) + EPS).any(axis=1) | \
            (least_runs @ self.state.avg_vector(card, slr) > slot.avg_free + EPS)
        end = s + int(too_big.argmax()) - 1 if too_big.any() else len(self.choice)
        self.longest[(card, slr, s)] = (slot.free, end)
        return end


class SpreadPlacer(RunPlacer):
    """RunPlacer for the first of two instances that run one card's SLRs in opposite directions (MobileNetV1 on
    a U250: 111,561 cycles down SLR 3->0 and 114,336 up 0->3, 3,542 fps, where RunPlacer fills SLRs 3-1 with
    the first and leaves no room for a second). Every SLR of the route gets a run, each ending where the
    instance's least resources (weighted by what the route offers) reach that SLR's cumulative share of the
    route's free resources; each run's options are balanced against what its SLR spares beyond the second
    instance's least needs there, so a resource both instances must spend (MobileNetV1: LUTs) is spent
    sparingly and one the second may do without (DSPs) generously. A cap only shortens runs and every run
    placed fits, so placements stay feasible."""

    def place(self, route: Route) -> Iterator[Placement]:
        if self.feasible_level() and len(route) > 1:
            self._spread(route)
            yield from super().place(route)

    def _spread(self, route: Route) -> None:
        """Per slot of the route the stage end its run may reach (the last slot: the whole pipeline), and what
        it spares for the second instance."""
        free = np.clip([self.state.slots[card][slr].free for card, slr in route], 0.0, None)
        offered = free.sum(axis=0)
        weights = np.divide(1.0, offered, out=np.zeros(5), where=offered > EPS)
        share = free @ weights / max(float(offered @ weights), EPS)
        need = self.least_prefix @ weights  # ascending in the stage end
        ends = np.searchsorted(need, np.cumsum(share) * need[-1], side="right") - 1
        self.caps = {slot: int(end) for slot, end in zip(route, ends.tolist())}
        self.caps[route[-1]] = len(self.choice)
        mirror = np.outer(share, self.least_prefix[-1])  # the second instance's least needs, spread alike
        self.spare = {slot: Resources(*np.clip(f - m, EPS, None).tolist()) for slot, f, m in zip(route, free, mirror)}

    def _run_capacity(self, card: int, slr: int) -> Resources:
        return self.spare[(card, slr)]

    def _longest_run(self, card: int, slr: int, s: int) -> int:
        return min(super()._longest_run(card, slr, s), self.caps[(card, slr)])


class SharedRoutePlacer(InstancePlacer):
    """Several instances of one level along one route, placed together stage by stage (stage s of every
    instance, then stage s + 1), each with its own option per stage: every SLR of the route is shared by all
    of them, an LUT-heavy variant of one next to a DSP-heavy one of another. Placing one instance after the
    other fills the first SLRs with the first and leaves the next only the end of the route (exact_bench #1:
    two instances that both span the two cards). Exhaustive within its steps."""

    def __init__(self, pipeline: Pipeline, state: GroupState, level: int, steps: Steps):
        super().__init__(pipeline, state, level, exhaustive=True, steps=steps)

    def place_together(self, route: Route, count: int) -> list[Placement] | None:
        """`count` instances, each from the route's first SLR to any later one; the state keeps what they hold.
        None if they do not fit (or the steps run out first)."""
        mark = self.state.mark()
        cards = {c for c, _ in route}
        # the VNx stacks first: an instance that crosses to the next card needs them, whatever it left there
        if self.state.cards_free(cards) and (len(cards) == 1 or all(self.state.open_eth(c) for c in cards)):
            self._weigh(route)
            lanes = [self._lane(route) for _ in range(count)]
            if self._fill(lanes, 0, 0):
                placements = [lane._finish_lane() for lane in lanes]
                if None not in placements:
                    return placements
        self.state.undo(mark)
        return None

    def _weigh(self, route: Route) -> None:
        """Weights that sum the five resources into one share of what the route offers (an LUT-heavy variant
        saves DSPs and spends LUTs, which per-resource sums cannot see), per stage the least share of the stages
        from it on, and each stage's options cheapest first (a fit is then found in tens of steps, not tens of
        thousands)."""
        offered = [sum(self.state.slots[c][r].free[k] for c, r in route) for k in range(5)]
        self.weights = [1 / f if f > EPS else 0.0 for f in offered]
        share = [[sum(w * x for w, x in zip(self.weights, o.res)) for o in options] for options in self.opts]
        self.opts = [[o for _, o in sorted(zip(shares, options), key=lambda so: so[0])]
                     for shares, options in zip(share, self.opts)]
        least = [min(shares) for shares in share]
        self.least_after = list(itertools.accumulate(reversed(least + [0.0])))[::-1]

    def _room_for(self, lanes: list[SharedRoutePlacer], s: int) -> bool:
        """Whether the route's SLRs that a lane can still use hold at least the least share of every lane's
        stages from s on (a bound: failing walks end early instead of spending the steps)."""
        first = min(lane.at for lane in lanes)
        room = sum(w * f for c, r in lanes[0].route[first:] for w, f in zip(self.weights, self.state.slots[c][r].free))
        return len(lanes) * self.least_after[s] <= room + EPS

    def _lane(self, route: Route) -> SharedRoutePlacer:
        lane = copy.copy(self)
        lane.route, lane.at, lane.keys = route, 0, []
        lane.chosen = [None] * len(self.pipeline.stages)
        lane.pieces, lane.cuts = [[route[0][0], route[0][1], 0, []]], []
        return lane

    def _fill(self, lanes: list[SharedRoutePlacer], s: int, i: int) -> bool:
        """Place stage s of lane i and every later (stage, lane), depth first; True once all are placed (the
        state then holds them), else the lane and the state are as they were."""
        if i == len(lanes):
            s, i = s + 1, 0
        if s == len(self.pipeline.stages):
            return True
        if not self.steps.take() or i == 0 and not self._room_for(lanes, s):
            return False
        lane, mark = lanes[i], self.state.mark()
        at, pieces, cuts = lane.at, len(lane.pieces), len(lane.cuts)
        while not self._fill_here(lanes, s, i):
            if not lane._move_on(s):
                lane.at, lane.pieces[pieces:], lane.cuts[cuts:] = at, [], []
                self.state.undo(mark)
                return False
        return True

    def _fill_here(self, lanes: list[SharedRoutePlacer], s: int, i: int) -> bool:
        """Stage s of lane i on the lane's current SLR with each option that fits in turn, and the rest after it."""
        lane = lanes[i]
        card, slr = lane.route[lane.at]
        for position, option in enumerate(self.opts[s]):
            key = (lane.at, position)
            if not self.state.fits(card, slr, option.res) or _below_previous(lanes, i, s, key):
                continue
            mark = self.state.mark()
            self.state.take(card, slr, option.res)
            lane.chosen[s] = option
            lane.pieces[-1][3].append(option)
            lane.keys.append(key)
            if self._fill(lanes, s, i + 1):
                return True
            lane.keys.pop()
            lane.pieces[-1][3].pop()
            self.state.undo(mark)
        return False

    def _move_on(self, s: int) -> bool:
        """Carry this lane's stream from its SLR to the route's next one at cut s; False where it cannot."""
        if s == 0 or self.at + 1 == len(self.route):
            return False
        (card, slr), (next_card, next_slr) = self.route[self.at], self.route[self.at + 1]
        if next_card == card:
            if not self.state.cross(card, slr, next_slr, self._chosen_width(s)):
                return False
        else:
            self.cuts.append((card, next_card, s))
        self.at += 1
        self.pieces.append([next_card, next_slr, s, []])
        return True

    def _finish_lane(self) -> Placement | None:
        self.route = self.route[:self.at + 1]  # the lane ends where its last stage is
        return self._finish()


def _below_previous(lanes: list[SharedRoutePlacer], i: int, s: int, key: tuple[int, int]) -> bool:
    """Lanes are interchangeable, so only one order of them is searched: a lane that so far repeats the previous
    one (same SLR and option at every stage) may not choose less than it at stage s."""
    return i > 0 and lanes[i - 1].keys[:s] == lanes[i].keys and key < lanes[i - 1].keys[s]
