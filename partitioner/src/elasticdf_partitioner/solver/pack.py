"""Step 2+3 (segment, place): pack instances of the pipeline onto a small group of cards.

An instance follows a *route*: a sequence of distinct cards; on each card a monotone walk over adjacent SLRs.
A card that passes the stream to another card does so from its Ethernet SLR, and the next card receives on
its Ethernet SLR (VNx stack, paid once per card that has any cut). Each SLR on the walk holds a contiguous
run of stages; an SLR with no stage is a pass-through that still costs SLLs.

The search is a depth-first branch and bound over instances. In exhaustive mode it branches over every
level, route, cut position and option, so its answer is optimal; in fast mode every instance of the group
gets one level, each route is filled greedily (farthest cut, cheapest option for what is left), and a node
budget bounds the work. Either way the result is feasible by construction.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..catalog import Catalog, Limits
from ..cluster import LINK_GBPS, Card
from ..resources import Resources
from .stages import Pipeline, StageOption

EPS = 1e-9
AVG_KINDS = (2, 3, 4)  # bram18, uram, dsp: the kinds the mean-utilisation limit covers


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


@dataclass
class GroupResult:
    placements: list[Placement]
    fps: float
    optimal: bool
    nodes: int


@dataclass
class _Slot:
    free: list[float]
    guide: tuple[float, ...]  # capacity after shell IP, for the mean-utilisation limit
    avg_free: float


@dataclass
class GroupState:
    """What is left on each SLR, SLL boundary and network port of the group's cards."""

    cards: list[Card]
    slots: list[list[_Slot]]
    sll: list[dict[tuple[int, int], float]]
    eth_cost: list[Resources]
    eth_on: list[bool]
    net_out: list[float]
    net_in: list[float]
    uplinks: dict[str, float] = field(default_factory=dict)  # leaf switch -> Gb/s left on its uplink
    log: list = field(default_factory=list)

    @classmethod
    def fresh(cls, cards: list[Card], catalog: Catalog, limits: Limits,
              uplinks: dict[str, float] | None = None) -> GroupState:
        slots, sll, eth_cost = [], [], []
        ip = catalog.ip_costs
        for card in cards:
            t = card.type
            row = []
            for s in range(t.n_slrs):
                guide = Resources.from_list(t.slrs[s]) - t.shell_overhead(s, ip)
                kinds = [k for k in AVG_KINDS if guide[k] > 0]
                row.append(_Slot(list(t.usable(s, ip, limits, with_eth=False)), tuple(guide),
                                 limits.memory_dsp_mean * len(kinds)))
            slots.append(row)
            pairs = {}
            for s in range(t.n_slrs - 1):
                pairs[(s, s + 1)] = pairs[(s + 1, s)] = float(t.sll_per_pair)
            sll.append(pairs)
            eth_cost.append(Resources.from_list(ip.eth).scale(limits.as_resources()))
        ports = [LINK_GBPS * max(c.type.qsfp_ports, 0) for c in cards]
        return cls(cards, slots, sll, eth_cost, [False] * len(cards), list(ports), list(ports), dict(uplinks or {}))

    def uplink_room(self, src: int, dst: int, gbps: float) -> bool:
        """Traffic between cards under different leaf switches crosses both leaves' uplinks."""
        switches = {self.cards[src].switch, self.cards[dst].switch}
        return len(switches) == 1 or all(gbps <= self.uplinks.get(sw, math.inf) + EPS for sw in switches)

    def use_uplinks(self, src: int, dst: int, gbps: float) -> None:
        switches = {self.cards[src].switch, self.cards[dst].switch}
        if len(switches) > 1:
            for sw in switches:
                if sw in self.uplinks:
                    self._set(self.uplinks, sw, self.uplinks[sw] - gbps)

    # -- mutations with an undo log -------------------------------------------------------------
    def _set(self, obj, key, value) -> None:
        self.log.append((obj, key, obj[key]))
        obj[key] = value

    def mark(self) -> int:
        return len(self.log)

    def undo(self, mark: int) -> None:
        while len(self.log) > mark:
            obj, key, value = self.log.pop()
            obj[key] = value

    def avg_vector(self, card: int, slr: int) -> np.ndarray:
        guide = self.slots[card][slr].guide
        return np.array([1.0 / guide[k] if k in AVG_KINDS and guide[k] > 0 else 0.0 for k in range(5)])

    def avg_weight(self, card: int, slr: int, res: Resources) -> float:
        guide = self.slots[card][slr].guide
        return sum(res[k] / guide[k] for k in AVG_KINDS if guide[k] > 0)

    def fits(self, card: int, slr: int, res: Resources) -> bool:
        slot = self.slots[card][slr]
        return all(r <= f + EPS for r, f in zip(res, slot.free)) and \
            self.avg_weight(card, slr, res) <= slot.avg_free + EPS

    def take(self, card: int, slr: int, res: Resources) -> None:
        slot = self.slots[card][slr]
        self._set(slot.__dict__, "free", [f - r for f, r in zip(slot.free, res)])
        self._set(slot.__dict__, "avg_free", slot.avg_free - self.avg_weight(card, slr, res))

    def open_eth(self, card: int) -> bool:
        """Reserve the VNx stack on the card's Ethernet SLR (once); False if it does not fit."""
        if self.eth_on[card]:
            return True
        eth_slr = self.cards[card].type.eth_slr
        if not self.fits(card, eth_slr, self.eth_cost[card]):
            return False
        self.take(card, eth_slr, self.eth_cost[card])
        self._set(self.eth_on, card, True)
        return True

    def free_total(self) -> Resources:
        total = [0.0] * 5
        for row in self.slots:
            for slot in row:
                for k in range(5):
                    total[k] += max(slot.free[k], 0.0)
        return Resources(*total)


# -- routes ------------------------------------------------------------------------------------

Route = tuple[tuple[int, int], ...]  # (card, slr) slots in stream order


def _walk(n: int, start: int, end: int) -> list[int]:
    step = 1 if end >= start else -1
    return list(range(start, end + step, step))


def routes(cards: list[Card], max_cards: int) -> list[Route]:
    """Every route over the group: card sequences of distinct cards, monotone SLR walks, eth hand-offs."""
    out: list[Route] = []

    def extend(prefix: list[int]) -> None:
        k = len(prefix)
        for last_end in range(cards[prefix[-1]].type.n_slrs):
            out.extend(_compose(cards, prefix, last_end))
        if k < max_cards:
            for c in range(len(cards)):
                if c not in prefix:
                    extend(prefix + [c])

    for c in range(len(cards)):
        extend([c])
    return sorted(set(out), key=lambda r: (len({c for c, _ in r}), len(r), r))


def _compose(cards: list[Card], seq: list[int], last_end: int) -> list[Route]:
    if len(seq) == 1:
        return [tuple((seq[0], s) for s in _walk(0, start, last_end)) for start in range(cards[seq[0]].type.n_slrs)]
    first, rest = seq[0], seq[1:]
    result = []
    for start in range(cards[first].type.n_slrs):
        slots = [(first, s) for s in _walk(0, start, cards[first].type.eth_slr)]
        for middle in rest[:-1]:
            slots.append((middle, cards[middle].type.eth_slr))
        last = rest[-1]
        slots += [(last, s) for s in _walk(0, cards[last].type.eth_slr, last_end)]
        result.append(tuple(slots))
    return result


# -- placing one instance along a route -------------------------------------------------------------

def balanced_order(opts: list[list[StageOption]], capacity: Resources) -> list[list[StageOption]]:
    """Rank each stage's options so the first ones together use the group's resources evenly.

    Local search on the instance's worst utilisation: starting from the options cheapest relative to
    capacity, repeatedly switch the one stage option that lowers max_r(demand_r / capacity_r) the most.
    LUT-hungry variants thereby give way to DSP or URAM ones exactly as far as LUT is the binding resource.
    """
    n_opts = max(len(o) for o in opts)
    table = np.full((len(opts), n_opts, 5), np.inf)
    for s, options in enumerate(opts):
        table[s, :len(options)] = [o.res for o in options]
    cap = np.array([c if c > EPS else EPS for c in capacity])
    relative = table / cap
    choice = np.nan_to_num(relative.sum(axis=2), nan=np.inf).argmin(axis=1)
    rows = np.arange(len(opts))
    demand = table[rows, choice].sum(axis=0)
    score = _score(demand / cap)
    for _ in range(4 * len(opts)):
        candidates = (demand - table[rows, choice])[:, None, :] + table
        scores = _score(candidates / cap)
        s, o = np.unravel_index(np.nan_to_num(scores, nan=np.inf).argmin(), scores.shape)
        if not scores[s, o] < score - 1e-12:
            break
        choice[s], demand, score = o, candidates[s, o], scores[s, o]
    cheap = np.nan_to_num(relative.sum(axis=2), nan=np.inf)
    return [[options[choice[s]]] + [options[i] for i in np.argsort(cheap[s, :len(options)]) if i != choice[s]]
            for s, options in enumerate(opts)]


def _balanced_cached(pipeline: Pipeline, opts, level: int, capacity: Resources) -> list[list[StageOption]]:
    """balanced_order depends only on the proportions of the capacity, so groups of one card type share it."""
    top = max(capacity) or 1.0
    key = ("balanced", level, tuple(round(c / top, 4) for c in capacity))
    if key not in pipeline.memo:
        pipeline.memo[key] = balanced_order(opts, capacity)
    return pipeline.memo[key]


def _score(util: np.ndarray) -> np.ndarray:
    """Worst utilisation first, total utilisation as the tie-break."""
    return util.max(axis=-1) + 1e-6 * util.sum(axis=-1)


class InstancePlacer:
    def __init__(self, pipeline: Pipeline, state: GroupState, level: int, exhaustive: bool):
        self.pipeline = pipeline
        self.state = state
        self.level = level
        self.exhaustive = exhaustive
        self.opts = [pipeline.pareto(s, level) for s in range(len(pipeline.stages))]
        if not exhaustive and all(self.opts):
            self.opts = _balanced_cached(pipeline, self.opts, level, state.free_total())
        self.crossing = pipeline.crossings()

    def feasible_level(self) -> bool:
        return all(self.opts)

    def place(self, route: Route) -> Iterator[Placement]:
        """Yield placements along `route` (state holds each one while the caller looks at it)."""
        walk = copy.copy(self)  # per-walk bookkeeping; the caller nests walks of further instances
        walk.route = route
        walk.chosen: list[StageOption | None] = [None] * len(self.pipeline.stages)
        walk.pieces: list[list] = [[route[0][0], route[0][1], 0, []]]
        walk.cuts: list[tuple[int, int, int]] = []
        yield from walk._step(0, 0)

    def _step(self, s: int, k: int) -> Iterator[Placement]:
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
        width = sum(self.chosen[e.src].out_widths[e.src_pos] for e in self.crossing[s])
        if next_card == card:
            boundary = self.state.sll[card]
            if width > boundary[(slr, next_slr)] + EPS:
                return
            self.state._set(boundary, (slr, next_slr), boundary[(slr, next_slr)] - width)
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

    def _finish(self) -> Placement | None:
        """Check network bandwidth at the instance's real rate and reserve it."""
        cycles = max(o.cycles for o in self.chosen)
        fclk = min(self.state.cards[c].type.fclk_mhz for c, _ in self.route)
        fps = fclk * 1e6 / cycles
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
        self.choice = [options[0] for options in self.opts]
        self.prefix = [Resources()]
        for option in self.choice:
            self.prefix.append(self.prefix[-1] + option.res)
        self.prefix_array = np.array(self.prefix)
        self.widths = [sum(self.choice[e.src].out_widths[e.src_pos] for e in cut) for cut in self.crossing]

    def place(self, route: Route) -> Iterator[Placement]:
        mark = self.state.mark()
        walk = copy.copy(self)
        walk.route, walk.chosen, walk.pieces, walk.cuts = route, self.choice, [], []
        placement = walk._greedy()
        if placement is not None:
            yield placement
        self.state.undo(mark)

    def _greedy(self) -> Placement | None:
        n, s = len(self.choice), 0
        for k, (card, slr) in enumerate(self.route):
            last_slot = k == len(self.route) - 1
            end = self._farthest(card, slr, s)
            if last_slot and end < n or k == 0 and end == s or not last_slot and end == n:
                return None
            while not last_slot and end > s and self.route[k + 1][0] == card and not self._cut_ok(k, end):
                end -= 1
            if not last_slot and not self._cut_ok(k, end) or k == 0 and end == s:
                return None
            self.state.take(card, slr, self.prefix[end] - self.prefix[s])
            self.pieces.append([card, slr, s, list(self.choice[s:end])])
            if not last_slot:
                self._cross(k, end)
            s = end
        return self._finish()

    def _farthest(self, card: int, slr: int, s: int) -> int:
        """The largest end e such that stages s..e-1 fit the SLR (fits is monotone in e)."""
        slot = self.state.slots[card][slr]
        runs = self.prefix_array[s:] - self.prefix_array[s]
        ok = (runs <= np.asarray(slot.free) + EPS).all(axis=1)
        ok &= runs @ self.state.avg_vector(card, slr) <= slot.avg_free + EPS
        return s + int(np.argmin(ok)) - 1 if not ok.all() else len(self.choice)

    def _cut_ok(self, k: int, position: int) -> bool:
        (card, slr), (next_card, next_slr) = self.route[k], self.route[k + 1]
        if next_card == card:
            return self.widths[position] <= self.state.sll[card][(slr, next_slr)] + EPS
        eth_free = all(self.state.eth_on[c] or self.state.fits(c, self.state.cards[c].type.eth_slr,
                                                               self.state.eth_cost[c]) for c in (card, next_card))
        return eth_free

    def _cross(self, k: int, position: int) -> None:
        (card, slr), (next_card, next_slr) = self.route[k], self.route[k + 1]
        if next_card == card:
            boundary = self.state.sll[card]
            self.state._set(boundary, (slr, next_slr), boundary[(slr, next_slr)] - self.widths[position])
        else:
            self.state.open_eth(card)
            self.state.open_eth(next_card)
            self.cuts.append((card, next_card, position))


# -- the search over instances ----------------------------------------------------------------------

@dataclass
class PackSettings:
    max_cards_per_instance: int = 4
    exhaustive: bool = False
    node_budget: int = 400
    exhaustive_node_budget: int = 200_000
    max_instances: int | None = None


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

    def _bound(self, state: GroupState) -> float:
        free = state.free_total()
        return min((f * r for f, r in zip(free, self.ratios) if r < math.inf), default=math.inf)

    def solve(self, levels: list[int], floor: float = 0.0) -> GroupResult:
        """Best packing found; in fast mode levels that cannot beat `floor` fps are not searched."""
        if self.settings.exhaustive:
            return self._search(levels, dive=False)
        fclk = max(c.type.fclk_mhz for c in self.cards) * 1e6
        ranked = sorted(((self._level_bound(level, fclk), level) for level in levels), reverse=True)
        dives: list[tuple[float, int, GroupResult]] = []
        best_fps, nodes = floor, 0
        for bound, level in ranked:
            if bound <= best_fps + EPS:
                break
            result = self._search([level], dive=True)
            nodes += result.nodes
            dives.append((result.fps, level, result))
            best_fps = max(best_fps, result.fps)
        dives.sort(key=lambda d: -d[0])
        best = dives[0][2] if dives else GroupResult([], 0.0, False, 0)
        for _, level, _ in dives[:3]:
            result = self._search([level], dive=False)
            nodes += result.nodes
            if result.fps > best.fps + EPS:
                best = result
        return GroupResult(best.placements, best.fps, False, nodes)

    def _level_bound(self, level: int, fclk: float) -> float:
        state = GroupState.fresh(self.cards, self.catalog, self.limits, self.uplinks)
        return min(self._bound(state), fclk / level * self._count_bound(state, level))

    def _greedy_bound(self, placer: GreedyPlacer, level: int):
        """Fast mode places only instances of one fixed option choice: at most as many as its totals fit."""
        need = placer.prefix[-1]
        fps = max(c.type.fclk_mhz for c in self.cards) * 1e6 / max(o.cycles for o in placer.choice)

        def bound(state: GroupState) -> float:
            free = state.free_total()
            count = min((free[k] / need[k] for k in range(5) if need[k] > EPS), default=math.inf)
            return math.floor(count + 1e-9) * fps

        return bound

    def _count_bound(self, state: GroupState, level: int) -> float:
        need = self.pipeline.least_resources(level)
        if need is None:
            return 0
        free = state.free_total()
        return min((free[k] / need[k] for k in range(5) if need[k] > 0), default=math.inf)

    def _search(self, levels: list[int], dive: bool) -> GroupResult:
        """Depth-first search over instances; a dive keeps only the first placement found at each depth."""
        state = GroupState.fresh(self.cards, self.catalog, self.limits, self.uplinks)
        if self.settings.exhaustive:
            placers = [InstancePlacer(self.pipeline, state, lv, True) for lv in levels]
            bound = self._bound
        else:
            placers = [GreedyPlacer(self.pipeline, state, lv) for lv in levels]
            bound = self._greedy_bound(placers[0], levels[0]) if placers[0].feasible_level() else self._bound
        placers = [p for p in placers if p.feasible_level()]
        best: list = [0.0, []]
        current: list[Placement] = []
        nodes = [0]
        complete = [True]
        budget = self.settings.exhaustive_node_budget if self.settings.exhaustive else self.settings.node_budget

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
                start = first_route if pi == first_placer else 0
                failed_here = set(failed)
                if not self.settings.exhaustive:
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
        return GroupResult(best[1], best[0], complete[0], nodes[0])
