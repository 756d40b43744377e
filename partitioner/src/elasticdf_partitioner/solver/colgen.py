"""A tight proven upper bound on total fps: the linear program over instance configurations.

An instance configuration (a *column*) is one copy of the pipeline: a level (its fps), an option per stage
and a slot (card type, SLR) per stage. The master LP runs any non-negative amount of each column within the
cluster's per-SLR resources, the BRAM/URAM/DSP mean limit per SLR, SLLs per SLR boundary and direction and
Ethernet port bandwidth, each summed over the cards of a type, and within what one instance can use (see
ColumnBound). Columns come from pricing (column generation): given the LP's resource prices, a dynamic program
over the stages finds, for every level, the cheapest configuration. Pricing searches a superset of the real
placements (walks that go one way on each card over at most max-cards-per-instance cards, each crossing
charged its narrowest possible stream width, uplinks and integrality left out), so the LP is a relaxation of
the solver's problem and any dual-feasible price vector proves a bound. An instance over several cards has their
VNx stacks open (its per-instance limits, see ColumnBound). Where the LP runs few instances, a real plan's integer
instance count is used too (ColumnBound.bound); on cards of one type, lp_bound also splits the cluster into the
cards a plan networks (their stacks open) and cards that each hold a one-card plan.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from ..catalog import Limits
from ..cluster import LINK_GBPS, Cluster
from .pack import PackSettings
from .stages import Pipeline
from .state import AVG_KINDS

MAX_ROUNDS = 200
TOLERANCE = 1e-7  # relative reduced cost below which a column is not worth adding
# the rounds stop once the bound is within this of the master LP's value (a lower bound on the LP's optimum):
# near the end the master's duals are degenerate and each round gains less than this
CONVERGED = 1e-5
STALL_ROUNDS = 25  # or once that many rounds have neither lowered the bound nor raised the value as much
COLUMNS_PER_ROUND = 16
DP_LEVELS = 16  # levels per DP pass in pricing
SMOOTHING = 0.5  # weight of the best duals so far in the prices of rounds with a count target
MAX_COUNTED = 30  # the LP's instance count up to which the bound is taken over integer counts
COUNT_TOLERANCE = 1e-3  # an LP count this close to an integer is not refined
MAX_INSTANCES = 1 << 40  # more instances than any cluster runs
Key = tuple[int, bool]  # (level, over several cards): instances that share per-instance limit rows


@dataclass
class Capacity:
    """The cluster as the LP sees it: one slot per (card type, SLR), capacities summed over the type's cards."""

    slot_type: np.ndarray  # (S,) row of each slot's card type
    slot_slr: np.ndarray  # (S,)
    cap: np.ndarray  # (S, 5) usable resources of one card
    mean_weight: np.ndarray  # (S, 5) 1/capacity for the mean-limited kinds
    mean_budget: np.ndarray  # (S,)
    eth_slot: list[int]  # per type: its Ethernet SLR's slot
    count: np.ndarray  # (T,) cards of each type
    sll: np.ndarray  # (T,) SLLs per boundary and direction of one card
    ports_gbps: np.ndarray  # (T,)
    eth_cost: np.ndarray  # (5,) what opening a card's VNx stack takes of its Ethernet SLR (one IP for all types)
    fclk_mhz: float  # the fastest clock: an instance never runs faster

    @classmethod
    def of(cls, cluster: Cluster, limits: Limits) -> Capacity:
        counts = Counter(c.type.name for c in cluster.cards)
        types = [cluster.catalog.card(name) for name in sorted(counts)]
        ip = cluster.catalog.ip_costs
        slot_type, slot_slr, cap, weight, budget, eth_slot = [], [], [], [], [], []
        for t, card_type in enumerate(types):
            for s in range(card_type.n_slrs):
                if s == card_type.eth_slr:
                    eth_slot.append(len(slot_type))
                guide = np.subtract(card_type.slrs[s], card_type.shell_overhead(s, ip))
                kinds = [k for k in AVG_KINDS if guide[k] > 0]
                slot_type.append(t)
                slot_slr.append(s)
                cap.append(card_type.usable(s, ip, limits, with_eth=False))
                weight.append([1.0 / guide[k] if k in kinds else 0.0 for k in range(5)])
                budget.append(limits.memory_dsp_mean * len(kinds))
        fclk = max(c.type.fclk_mhz for c in cluster.cards)
        return cls(np.array(slot_type), np.array(slot_slr), np.array(cap, float), np.array(weight),
                   np.array(budget), eth_slot, np.array([counts[t.name] for t in types], float),
                   np.array([t.sll_per_pair for t in types], float),
                   np.array([LINK_GBPS * max(t.qsfp_ports, 0) for t in types], float),
                   np.multiply(ip.eth, list(limits.as_resources())), fclk)

    @property
    def n_slots(self) -> int:
        return len(self.slot_type)

    def stack(self) -> tuple[np.ndarray, np.ndarray]:
        """(S, 5) what an open VNx stack takes of each slot (its card's Ethernet SLR), and (S,) of its mean
        budget."""
        stack = np.zeros((self.n_slots, 5))
        stack[self.eth_slot] = self.eth_cost
        return stack, (stack * self.mean_weight).sum(axis=1)

    def sides(self) -> np.ndarray:
        """(T, 2, S) masks of each card type's slots below and above its Ethernet SLR."""
        eth = self.slot_slr[np.array(self.eth_slot)]  # (T,)
        own = self.slot_type[None, :] == np.arange(len(self.count))[:, None]  # (T, S)
        return np.stack([own & (self.slot_slr[None, :] < eth[:, None]),
                         own & (self.slot_slr[None, :] > eth[:, None])], axis=1)

    def boundary_rows(self) -> list[tuple[int, int, int]]:
        """(slot a, slot b) pairs of adjacent SLRs of one card type, both directions, as (type, a, b)."""
        out = []
        for a in range(self.n_slots):
            for b in range(self.n_slots):
                if self.slot_type[a] == self.slot_type[b] and abs(self.slot_slr[a] - self.slot_slr[b]) == 1:
                    out.append((int(self.slot_type[a]), a, b))
        return out


class _Tables:
    """Per level: the cheapest option of each stage (prefix minima over the cycle-sorted options), the
    narrowest stream crossing each cut, and the bits per frame crossing it."""

    def __init__(self, pipeline: Pipeline, capacity: Capacity):
        options = [(s, o) for s, stage in enumerate(pipeline.stages) for o in stage.options]
        self.stage_of = np.array([s for s, _ in options])
        self.res = np.array([o.res for _, o in options], float)
        self.starts = np.searchsorted(self.stage_of, np.arange(len(pipeline.stages)))
        self.levels = np.array(pipeline.levels(), float)
        cycles = np.array([o.cycles for _, o in options])
        ends = np.array([np.searchsorted(cycles[a:b], self.levels, side="right") + a - 1 for a, b in
                         zip(self.starts, list(self.starts[1:]) + [len(options)])]).T  # (L, stages)
        self.last = np.where(ends >= self.starts[None, :], ends, -1)  # last option within each level, -1: none
        fits = (self.res[:, None, :] <= capacity.cap[None, :, :] + 1e-9).all(axis=2)
        fits &= (self.res @ capacity.mean_weight.T) <= capacity.mean_budget[None, :] + 1e-9
        self.misfit = np.where(fits, 0.0, np.inf)  # (N, S): 0 where the option fits the slot alone
        n = len(pipeline.stages)
        self.width = np.zeros((len(self.levels), n))  # narrowest stream over each cut, at each level
        self.bits = np.zeros(n)
        for p in range(1, n):
            for e in pipeline.crossing(p):
                a, b = self.starts[e.src], self.starts[e.src] + len(pipeline.stages[e.src].options)
                widths = np.minimum.accumulate([o.out_widths[e.src_pos] for o in pipeline.stages[e.src].options])
                idx = self.last[:, e.src] - a
                self.width[:, p] += np.where(idx >= 0, widths[np.clip(idx, 0, b - a - 1)], 0.0)
                self.bits[p] += e.bits_per_frame

    def prices(self, slot_price: np.ndarray) -> np.ndarray:
        """The option prices (N + 1, G, S) under the slot prices of each price group (G, S, 5): inf where the
        option does not fit the slot, and a last row of inf that ends the last stage's range."""
        n, (groups, slots, _) = len(self.res), slot_price.shape
        priced = np.empty((n + 1, groups * slots))
        priced[n] = np.inf
        np.matmul(self.res, slot_price.reshape(-1, 5).T, out=priced[:n])  # one product for every group
        priced = priced.reshape(n + 1, groups, slots)
        priced[:n] += self.misfit[:, None, :]
        return priced

    def stage_costs(self, priced: np.ndarray, levels: list[int], group: np.ndarray) -> np.ndarray:
        """cost[i, s, slot] of the cheapest option of stage s within level levels[i] under option prices
        priced[:, group[i]]. Every level must have an option for every stage."""
        cost = np.empty((len(levels), len(self.starts), priced.shape[2]))
        for i, level in enumerate(levels):
            ranges = np.column_stack([self.starts, self.last[level] + 1]).ravel()
            cost[i] = np.minimum.reduceat(priced[:, group[i]], ranges, axis=0)[::2]
        return cost

    def cheapest_option(self, priced: np.ndarray, level: int, stage: int, slot: int) -> int:
        """Which option `stage_costs` took for this stage and slot (priced: one group's option prices, (N + 1, S))."""
        first = self.starts[stage]
        return first + int(np.argmin(priced[first:self.last[level, stage] + 1, slot]))


@dataclass
class Column:
    level: int  # index into the levels
    several: bool  # runs over several cards
    fps: float
    use: np.ndarray


@dataclass
class _Pricing:
    """What pricing proves for one price vector: every real configuration's reduced cost is at most
    `relative` x its fps and at most `absolute`; and the columns worth adding to the master."""

    relative: float
    absolute: float
    columns: list[Column]


@dataclass
class _Walks:
    """The DP's cheapest walks of some levels: per level its cost, its last state, and the back pointers and
    option prices to read the walk back. A state is (direction, run, slot) flattened; a run is the part of the
    walk on one card."""

    levels: list[int]
    total: np.ndarray  # (L,)
    end: np.ndarray  # (L,)
    back: np.ndarray  # (L, stages, 2, runs, S): the state the walk came from
    priced: np.ndarray  # (N + 1, G, S): option prices of each price group (see _Tables.prices)
    group: np.ndarray  # (L,)
    runs: int


class ColumnBound:
    """Column generation for the LP; `bound()` returns a proven upper bound on total fps.

    Pricing walks follow the placement rules that cost nothing to track: on a card the walk goes one way (a
    stream leaving a card walks on towards its Ethernet SLR, one arriving walks away from it), and an instance
    runs on at most max cards per instance cards, so its walk has that many runs. Without the one-way rule a
    walk could alternate between SLRs and mix stages of every part of the model on each SLR, which no placement
    can.

    An instance on one card uses at most that card's resources, mean budget and SLLs. One over several cards uses
    at most k = min(cards of a type, max cards per instance) cards of each type with their VNx stacks open, so at
    most k times one networked card's resources, mean budget, SLLs and ports of each slot, boundary and type, and
    one side of the Ethernet SLR's worth in each of its first and last run (what keeps an instance over two U55Cs
    to four SLRs). These are its *per-instance limits*. Pricing only checks each option against an SLR, so without
    them the LP runs configurations that would need several cards' worth of one SLR at a fraction each. The master
    therefore has, per level and kind (one card, several) with columns, the limit for the average instance of that
    key (sum over its columns of x_j (use_j - limit) <= 0: every real instance meets it, so does any mix of them).
    Its dual mu_K >= 0 enters pricing as a Lagrangian term: for a real instance R of key K, y.use_R >= (y +
    mu_K).use_R - mu_K.limit, and the DP under the prices y + mu_K bounds the first term from below, so the bound
    stays proven for any mu_K. The limit term is charged once per instance, not per visit of a slot. (Lagrangian
    prices can only ever enforce the limit on the average instance of a key: a mix of a walk that overfills one
    SLR with one that overfills another passes it. benchmarks/results/certificate.md says what that leaves.)"""

    def __init__(self, pipeline: Pipeline, cluster: Cluster, limits: Limits, settings: PackSettings | None = None,
                 networked: bool = False):
        settings = settings or PackSettings()
        self.pipeline = pipeline
        self.cap = c = Capacity.of(cluster, limits)
        self.tables = _Tables(pipeline, c)
        self.boundaries = c.boundary_rows()
        self.fps = c.fclk_mhz * 1e6 / self.tables.levels
        # levels every stage has an option for, and no slower than a latency floor allows
        reachable = (self.tables.last >= 0).all(axis=1) & (self.fps >= settings.min_instance_fps * (1 - 1e-9))
        self.allowed = np.flatnonzero(reachable).tolist()
        self.sides = c.sides()
        self.off_eth = self.sides.any(axis=1)  # (T, S): the slots of each type off its Ethernet SLR
        self.n_res, self.n_mean, self.n_sll, self.n_types = 5 * c.n_slots, c.n_slots, len(self.boundaries), len(c.count)
        self.runs = int(min(settings.max_cards_per_instance, c.count.sum()))
        self.rhs = self._row_limits(c.count, networked=networked)
        # what one instance can use on one card, and over several
        self.per_instance = {False: self._row_limits(np.minimum(c.count, 1), 1),
                             True: self._row_limits(np.minimum(c.count, settings.max_cards_per_instance), self.runs)}
        same = c.slot_type[:, None] == c.slot_type[None, :]
        self.step_ok = np.array([same & (c.slot_slr[None, :] >= c.slot_slr[:, None]),  # [direction, a, b]:
                                 same & (c.slot_slr[None, :] <= c.slot_slr[:, None])])  # up, down
        eth = c.slot_slr[np.array(c.eth_slot)][c.slot_type]  # the Ethernet SLR of each slot's card
        self.leave_ok = np.array([eth >= c.slot_slr, eth <= c.slot_slr])  # [direction, slot]
        self.arrive_ok = np.array([c.slot_slr >= eth, c.slot_slr <= eth])
        self.hop_ok = ~same | (c.count[c.slot_type] >= 2)[:, None]

    def _row_limits(self, cards: np.ndarray, runs: int | None = None, networked: bool = False) -> np.ndarray:
        """Each row's limit (resources and mean budget per slot, SLLs per boundary, ports out and in per type,
        resources off the Ethernet SLR per type) for `cards` cards of each type: of one instance of at most `runs`
        runs (cards) if given, else of the cluster. Each card's VNx stack takes its share of the Ethernet SLR
        where the cards are networked, or the instance runs over several cards (each has its stack open)."""
        c = self.cap
        stack, stack_mean = c.stack() if networked or (runs or 1) > 1 else (0.0, 0.0)
        return np.concatenate([
            ((c.cap - stack) * cards[c.slot_type][:, None]).ravel(),
            (c.mean_budget - stack_mean) * cards[c.slot_type],
            np.array([c.sll[t] * cards[t] for t, _, _ in self.boundaries]),
            c.ports_gbps * cards, c.ports_gbps * cards,
            self._off_eth_limits(cards, runs).ravel(),
        ])

    def _off_eth_limits(self, cards: np.ndarray, runs: int | None) -> np.ndarray:
        """(T, 5) what a type's SLRs off its Ethernet SLR hold. A run that hands the stream on walks to (or from)
        the Ethernet SLR from one side of it only, and a middle run sits on the Ethernet SLR alone: an instance
        of several runs uses at most one side's worth in its first run and one in its last. Where the Ethernet
        SLR is in the middle (U55C, U250), that is less than all the SLRs of the cards the instance runs on."""
        side = self.sides.astype(float) @ self.cap.cap  # (T, 2, 5)
        both = side.sum(axis=1)
        if runs is None:
            return both * cards[:, None]
        ends = np.minimum(cards, 2)[:, None] if runs > 1 else np.zeros((len(cards), 1))
        return np.maximum(both * np.minimum(cards, 1)[:, None], ends * side.max(axis=1))

    # -- dual vector layout ---------------------------------------------------------------------
    def _split(self, y: np.ndarray):
        i = 0
        parts = []
        for size in (self.n_res, self.n_mean, self.n_sll, self.n_types, self.n_types, 5 * self.n_types):
            parts.append(y[i:i + size])
            i += size
        res, mean, sll, out, inn, off_eth = parts
        return res.reshape(-1, 5), mean, sll, out, inn, off_eth.reshape(-1, 5)

    def _moves(self, sll_price: np.ndarray, out: np.ndarray, inn: np.ndarray):
        """Per slot pair: SLL price summed over the walk inside a card (walk), and for a hand-off to another
        card the SLL prices to and from the Ethernet SLRs (hop_sll) plus the port prices (hop_net). Pairs the
        move cannot join cost 0 here: the DP's masks rule them out."""
        c, s = self.cap, self.cap.n_slots
        price = {(a, b): sll_price[i] for i, (_, a, b) in enumerate(self.boundaries)}
        walk = np.zeros((s, s))
        for a in range(s):
            for b in range(s):
                if c.slot_type[a] == c.slot_type[b]:
                    walk[a, b] = sum(price[x, y] for x, y in self._path(a, b))
        to_eth = np.array([walk[a, c.eth_slot[c.slot_type[a]]] for a in range(s)])
        from_eth = np.array([walk[c.eth_slot[c.slot_type[b]], b] for b in range(s)])
        hop_net = out[c.slot_type][:, None] + inn[c.slot_type][None, :]
        return walk, to_eth[:, None] + from_eth[None, :], hop_net

    def _path(self, a: int, b: int) -> list[tuple[int, int]]:
        """Adjacent slot pairs crossed walking from slot a to slot b of the same card type."""
        step = 1 if b > a else -1
        return [(x, x + step) for x in range(a, b, step)]

    def price(self, y: np.ndarray, mu: dict[Key, np.ndarray], count_price: float = 0.0) -> _Pricing | None:
        """Under the duals y of the cluster rows, mu[level, several] of the per-instance limit rows of a level's
        instances on one card or over several (none: 0) and count_price of the instance-count row: upper bounds
        on the reduced cost of every real configuration (None: no level has a walk), and the walks of the
        COLUMNS_PER_ROUND best levels whose reduced cost less count_price is positive. Walks on one card and over
        several are priced apart (each kind has its own limit rows); levels without limit duals share one price
        vector of each kind, each other level gets its own.

        A walk costs at least the cheapest slot of each of its stages, which bounds every level's reduced cost
        from above; the DP runs on the levels in the order of that bound (less count_price, over fps), DP_LEVELS
        at a time, until no level left could beat the best found. A level the DP did not run keeps that bound."""
        levels = self.allowed
        kinds = [False, True] if self.runs > 1 else [False]  # walks on one card, over several
        vectors: list[np.ndarray] = []
        groups, credits = [], []
        for several in kinds:
            group, credit = np.full(len(levels), len(vectors)), np.zeros(len(levels))
            vectors.append(y)
            for i, lv in enumerate(levels):
                if (lv, several) in mu:
                    group[i], credit[i] = len(vectors), mu[lv, several] @ self.per_instance[several]
                    vectors.append(y + mu[lv, several])
            groups.append(group)
            credits.append(credit)
        parts = [self._split(v) for v in vectors]
        priced = self.tables.prices(np.array([res + mean[:, None] * self.cap.mean_weight + self.off_eth.T @ off_eth
                                              for res, mean, _, _, _, off_eth in parts]))
        moves = [np.array(m) for m in zip(*(self._moves(*part[2:5]) for part in parts))]
        costs = [self.tables.stage_costs(priced, levels, group) for group in groups]
        fps = self.fps[levels]
        reduced = np.max([fps - cost.min(axis=2).sum(axis=1) + credit for cost, credit in zip(costs, credits)], axis=0)
        if not np.isfinite(reduced).any():
            return None
        order = np.argsort(-(reduced - count_price) / fps)
        found: list[tuple[float, _Walks, int]] = []
        for start in range(0, len(order), DP_LEVELS):
            if found and (reduced[order[start]] - count_price) / fps[order[start]] <= found[0][0]:
                break
            chunk = order[start:start + DP_LEVELS]
            at = [levels[i] for i in chunk]
            walks = [self._walks(cost[chunk], at, group[chunk], priced, moves, self.runs if several else 1)
                     for cost, group, several in zip(costs, groups, kinds)]
            by_kind = np.array([fps[chunk] - w.total + credit[chunk] for w, credit in zip(walks, credits)])
            reduced[chunk] = by_kind.max(axis=0)
            gain = (reduced[chunk] - count_price) / fps[chunk]
            best = by_kind.argmax(axis=0)
            found = sorted(found + [(r, walks[best[i]], i) for i, r in enumerate(gain) if np.isfinite(r)],
                           key=lambda f: -f[0])
        if not found:
            return None
        columns = [self._column(walks, i) for r, walks, i in found[:COLUMNS_PER_ROUND] if r > TOLERANCE]
        return _Pricing(float(np.max(reduced / fps)), float(np.max(reduced)), columns)

    def _walks(self, cost: np.ndarray, levels: list[int], group: np.ndarray, priced: np.ndarray,
               moves: list[np.ndarray], runs: int) -> _Walks:
        """The cheapest walk of at most `runs` runs of each of `levels` given the cheapest option cost per stage
        and slot (L, stages, S) and the moves of each price group: a DP over the stages whose state is the slot,
        the direction of the walk on the current card and the run (card) count."""
        t = self.tables
        walk, hop_sll, hop_net = (m[group] for m in moves)
        n_levels, n_stages, s = cost.shape
        state = np.arange(2 * runs * s).reshape(2, runs, s)
        f = np.full((n_levels, 2, runs, s), np.inf)
        f[:, :, 0] = cost[:, 0, None, :]
        back = np.zeros((n_levels, n_stages, 2, runs, s), dtype=np.int64)
        gbps = t.bits[None, :] * self.fps[levels][:, None] / 1e9  # (L, P)
        for p in range(1, n_stages):
            w = t.width[levels, p][:, None, None]
            inside = np.where(self.step_ok[None], (walk * w)[:, None], np.inf)  # (L, 2, S, S)
            cand = f[..., :, None] + inside[:, :, None]  # (L, 2, runs, S from, S to)
            arg = cand.argmin(axis=3)
            new = np.take_along_axis(cand, arg[:, :, :, None, :], axis=3)[:, :, :, 0, :]
            src = state[None, :, :, :1] + arg  # the same direction and run, slot arg
            if runs > 1:
                hop = np.where(self.hop_ok[None], hop_sll * w + hop_net * gbps[:, p][:, None, None], np.inf)
                new, src = self._hand_off(f, hop, new, src, state)
            back[:, p] = src
            f = new + cost[:, p][:, None, None, :]
        if runs > 1:
            f[:, :, 0] = np.inf  # a walk over several cards hands off at least once
        flat = f.reshape(n_levels, -1)
        end = flat.argmin(axis=1)
        return _Walks(levels, flat[np.arange(n_levels), end], end, back, priced, group, runs)

    def _hand_off(self, f: np.ndarray, hop: np.ndarray, new: np.ndarray, src: np.ndarray, state: np.ndarray):
        """Improve the next states `new` (from `src`) by a hand-off to another card, which starts the next run:
        it leaves the card walking on to its Ethernet SLR and arrives walking away from the next one's."""
        leaving = np.where(self.leave_ok[None, :, None, :], f, np.inf)  # (L, 2, runs, S)
        direction = leaving.argmin(axis=1)  # (L, runs, S)
        best = np.take_along_axis(leaving, direction[:, None], axis=1)[:, 0]
        cand = best[:, :-1, :, None] + hop[:, None]  # (L, runs - 1, S from, S to)
        slot = cand.argmin(axis=2)
        arrived = np.take_along_axis(cand, slot[:, :, None, :], axis=2)[:, :, 0, :]
        arrived = np.where(self.arrive_ok[None, :, None, :], arrived[:, None], np.inf)  # (L, 2, runs - 1, S)
        left_in = np.take_along_axis(direction[:, :-1], slot, axis=2)  # the direction on the card it left
        came = state[left_in, np.arange(len(state[0]) - 1)[None, :, None], slot]  # (L, runs - 1, S)
        better = arrived < new[:, :, 1:]
        new[:, :, 1:] = np.where(better, arrived, new[:, :, 1:])
        src[:, :, 1:] = np.where(better, came[:, None], src[:, :, 1:])
        return new, src

    def _column(self, walks: _Walks, i: int) -> Column:
        """The configuration of walk i and what it uses of each row."""
        t, c = self.tables, self.cap
        lv = walks.levels[i]
        n_stages, s, runs = walks.back.shape[1], c.n_slots, walks.runs
        states = [0] * n_stages
        states[-1] = walks.end[i]
        for p in range(n_stages - 1, 0, -1):
            states[p - 1] = walks.back[i, p].ravel()[states[p]]
        use = np.zeros(len(self.rhs))
        res = use[:self.n_res].reshape(-1, 5)
        mean = use[self.n_res:self.n_res + self.n_mean]
        base = self.n_res + self.n_mean
        sll_index = {(a, b): base + i for i, (_, a, b) in enumerate(self.boundaries)}
        net = base + self.n_sll
        off_eth = use[net + 2 * self.n_types:].reshape(-1, 5)
        for p, st in enumerate(states):
            slot = st % s
            option = t.cheapest_option(walks.priced[:, walks.group[i]], lv, p, slot)
            res[slot] += t.res[option]
            off_eth[self.off_eth[:, slot]] += t.res[option]
            mean[slot] += t.res[option] @ c.mean_weight[slot]
            if p == 0:
                continue
            a, width = states[p - 1] % s, t.width[lv, p]
            if (st // s) % runs == (states[p - 1] // s) % runs:  # a walk on the card
                path = self._path(a, slot)
            else:  # a hand-off: to the Ethernet SLR, over the network, from the next card's
                path = self._path(a, c.eth_slot[c.slot_type[a]]) + self._path(c.eth_slot[c.slot_type[slot]], slot)
                gbps = t.bits[p] * self.fps[lv] / 1e9
                use[net + c.slot_type[a]] += gbps
                use[net + self.n_types + c.slot_type[slot]] += gbps
            for pair in path:
                use[sll_index[pair]] += width
        return Column(lv, runs > 1, float(self.fps[lv]), use)

    def _first_prices(self) -> np.ndarray:
        """Each row priced at the inverse of what the cluster has of it, scaled so that all of everything costs the
        slowest level's fps (any prices prove a bound): the first columns are then configurations lean in what
        is scarce, not whatever fits when everything is free."""
        scarce = np.divide(1.0, self.rhs, out=np.zeros(len(self.rhs)), where=self.rhs > 0)
        slowest = self.fps[self.allowed].min() if self.allowed else 0.0
        return scarce * slowest / max(np.count_nonzero(scarce), 1)

    def bound(self, counted: bool = True) -> float:
        """The LP bound, and where the LP runs few instances, the bound over integer instance counts.

        Any duals (y >= 0 of the cluster rows, mu >= 0 of the limit rows) prove two bounds through pricing. (1)
        (y, mu) / (1 - relative) prices every real instance at least at its fps, so a plan has at most
        y.rhs / (1 - relative) fps. (2) A plan of N real instances R has fps sum_R fps_R <= y.rhs +
        sum_R (fps_R - y.use_R) <= y.rhs + N absolute (the limit rows enter as in the class docstring): a line
        in N. The bound is the largest over integer N >= 1 of the least of (1) and every line, a concave
        function of N: an LP running 1.28 instances cannot claim the 0.28 where one instance and two are both
        worse. Duals of the master with the count row sum x <= floor or >= ceil of the LP's count give the
        lines tight there (the row's own dual cancels out of (2), so these are proven like any others)."""
        master = _Master(self.rhs, self.per_instance)
        lines: list[tuple[float, float]] = []
        best = self._rounds(master, lines, (self._first_prices(), {}, 0.0))
        count = master.instance_count()
        if counted and 0 < best < math.inf and count <= MAX_COUNTED and abs(count - round(count)) > COUNT_TOLERANCE:
            reached = 0.0  # the bound at the counts done: the next need not go below it
            for target in sorted({math.floor(count), math.ceil(count)} - {0}, reverse=True):
                master.count(target, at_most=target < count)
                duals = master.solve()
                if duals is not None:
                    best = min(best, self._rounds(master, lines, duals, target, reached))
                    reached = max(reached, min([best] + [v + target * r for v, r in lines]))
        return _best_count(lines, best) if best > 0 else best

    def _rounds(self, master: _Master, lines: list[tuple[float, float]], duals, target: int | None = None,
                enough: float = 0.0) -> float:
        """Column generation from `duals` (y, mu, count row's dual) until the bound at `target` instances (None:
        at any count) is within CONVERGED of the master's value or at most `enough`, or stalls. Adds each price
        vector's line to `lines` and returns the least bound (1) of `bound`; 0 if no level has a walk.

        With a target the master's duals are degenerate (the count row's dual can take the value of every
        column at once), so pricing runs at a mix of them and the duals of the best line so far (Wentges
        smoothing); where the mix prices no column, at the master's own duals."""
        best, tight, most, progress = math.inf, math.inf, -math.inf, 0
        centre, mix = None, 0.0
        for round_ in range(MAX_ROUNDS):
            y, mu, count_price = at = _mixed(centre, duals, mix) if centre is not None else duals
            pricing = self.price(y, mu, count_price)
            if pricing is None:
                return 0.0  # no level has a fitting option for every stage
            value = float(y @ self.rhs)
            lines.append((value, pricing.absolute))
            if pricing.relative < 1:
                best = min(best, value / (1 - max(pricing.relative, 0.0)))
            now = best
            if target is not None:
                line = value + target * pricing.absolute
                if line < min(tight, best):
                    centre = at
                now = min(best, line)
            if now < tight * (1 - CONVERGED) or master.value > most + abs(most) * CONVERGED:
                progress = round_
            tight, most = min(tight, now), max(most, master.value)
            if (not pricing.columns and mix == 0) or tight <= max(most * (1 + CONVERGED), enough) or \
                    round_ - progress >= STALL_ROUNDS:
                break
            mix = SMOOTHING if pricing.columns and target is not None else 0.0
            if not pricing.columns:
                continue
            master.add(pricing.columns)
            duals = master.solve()
            if duals is None:
                break  # the master LP failed numerically: the bounds found so far stand
        return best


def lp_bound(pipeline: Pipeline, cluster: Cluster, limits: Limits, settings: PackSettings | None = None) -> float:
    """The LP bound (ColumnBound) and, on cards of one type, the bound over how many cards a plan networks.

    A plan's instances over several cards run on some m of its cards (m = 0 or 2 ..), each with its VNx stack
    open. Those m cards with everything else on them are a plan for m networked cards, and every other card holds
    a plan for one card: the plan has at most (cards - m) x one card's bound + the bound of m networked cards,
    for the worst m. Beyond k = max cards per instance, every row of the m-card LP is m / k times the k-card
    one's, so its bound is m / k times the k-card bound over any count, and the worst m of those is m = k or
    all cards (the sum is linear in m). A single card or a mixed cluster keeps the LP bound."""
    settings = settings or PackSettings()
    whole = ColumnBound(pipeline, cluster, limits, settings).bound()
    cards = len(cluster.cards)
    k = min(settings.max_cards_per_instance, cards)
    if len(cluster.card_types) > 1 or k < 2:
        return whole

    def networked(m: int) -> ColumnBound:
        return ColumnBound(pipeline, replace(cluster, cards=cluster.cards[:m]), limits, settings, networked=True)

    one = ColumnBound(pipeline, replace(cluster, cards=cluster.cards[:1]), limits, settings).bound()
    worst = [cards * one] + [(cards - m) * one + networked(m).bound() for m in range(2, k)]
    if cards == k:
        worst.append(networked(k).bound())
    else:
        per_card = networked(k).bound(counted=False) / k
        worst += [(cards - k) * one + k * per_card, cards * per_card]
    return min(whole, max(worst))


def _mixed(centre, duals, weight: float):
    """weight x centre + (1 - weight) x duals, each (y, mu, count price)."""
    (yc, muc, nc), (yd, mud, nd) = centre, duals
    mu = {lv: weight * muc.get(lv, 0.0) + (1 - weight) * mud.get(lv, 0.0) for lv in muc.keys() | mud.keys()}
    return weight * yc + (1 - weight) * yd, mu, weight * nc + (1 - weight) * nd


def _best_count(lines: list[tuple[float, float]], cap: float) -> float:
    """max over integer N >= 1 of min(cap, v + N r over the lines (v, r)): concave in N, so the first N
    after which it stops growing (a binary search on its difference)."""
    v = np.array([cap] + [v for v, _ in lines])
    r = np.array([0.0] + [r for _, r in lines])

    def at(n: int) -> float:
        return float(np.min(v + n * r))

    low, high = 1, 2
    while at(high) > at(high - 1):
        if high >= MAX_INSTANCES:
            return cap
        low, high = high, 2 * high
    while low < high:  # the first n in [low, high] with at(n + 1) <= at(n)
        mid = (low + high) // 2
        low, high = (mid + 1, high) if at(mid + 1) > at(mid) else (low, mid)
    return max(at(low), 0.0)


class _Master:
    """The restricted master LP over the columns priced so far, grown in place (GLOP starts from its last
    basis): the cluster rows, per key (level, over several cards) the per-instance limit rows some column of the
    key exceeds (the others cannot bind: every coefficient would be <= 0), and once `count` is called the
    instance-count row."""

    def __init__(self, rhs: np.ndarray, per_instance: dict[bool, np.ndarray]):
        self.rhs = rhs
        self.per_instance = per_instance
        self.columns: list[Column] = []
        self.counted: tuple[int, bool] | None = None  # (target, at most) of the count row
        self.value = -math.inf  # of the last solution
        self.solved = False  # whether the last solve found one
        self._fresh()

    def _fresh(self) -> None:
        from ortools.linear_solver import pywraplp  # only --certify needs the LP solver: plans load faster

        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        self.optimal = pywraplp.Solver.OPTIMAL
        self.rows = [self.solver.Constraint(-self.solver.infinity(), float(limit)) for limit in self.rhs]
        self.limit_rows: dict[Key, dict[int, object]] = {}  # key -> row index -> its limit row
        self.at_key: dict[Key, list[tuple[object, Column]]] = {}
        self.objective = self.solver.Objective()
        self.objective.SetMaximization()
        self.count_row = None
        if self.counted is not None:
            self.count(*self.counted)

    def count(self, target: int, at_most: bool) -> None:
        """Run at most (else at least) `target` instances. Short of instances, a slack makes up the rest at a
        price above any column's fps, so the master stays feasible and its duals steer pricing to more."""
        inf = self.solver.infinity()
        if self.count_row is None:
            self.count_row = self.solver.Constraint(-inf, inf)
            for var, _ in self._variables():
                self.count_row.SetCoefficient(var, 1.0)
            short = self.solver.NumVar(0, inf, "")
            self.count_row.SetCoefficient(short, 1.0)
            self.objective.SetCoefficient(short, -2 * max((c.fps for c in self.columns), default=1.0))
        self.count_row.SetBounds(-inf, target) if at_most else self.count_row.SetBounds(target, inf)
        self.counted = (target, at_most)

    def _variables(self):
        return [pair for here in self.at_key.values() for pair in here]

    def instance_count(self) -> float:
        """How many instances the last solution runs (nan if the last solve failed)."""
        if not self.solved:
            return math.nan
        return sum(var.solution_value() for var, _ in self._variables())

    def add(self, columns: list[Column]) -> None:
        self.columns += columns
        for col in columns:
            self._add(col)

    def _add(self, col: Column) -> None:
        var = self.solver.NumVar(0, self.solver.infinity(), "")
        self.objective.SetCoefficient(var, col.fps)
        for r in np.flatnonzero(col.use):
            self.rows[r].SetCoefficient(var, float(col.use[r]))
        if self.count_row is not None:
            self.count_row.SetCoefficient(var, 1.0)
        key = (col.level, col.several)
        here = self.at_key.setdefault(key, [])
        here.append((var, col))
        limits, limit = self.limit_rows.setdefault(key, {}), self.per_instance[col.several]
        for r, row in limits.items():
            row.SetCoefficient(var, float(col.use[r] - limit[r]))
        for r in np.flatnonzero(col.use > limit + 1e-9):
            if r not in limits:
                limits[r] = row = self.solver.Constraint(-self.solver.infinity(), 0.0)
                for other, other_col in here:
                    row.SetCoefficient(other, float(other_col.use[r] - limit[r]))

    def solve(self) -> tuple[np.ndarray, dict[Key, np.ndarray], float] | None:
        """Duals of the cluster rows, per key those of its limit rows, and that of the count row (0 without
        one); None if GLOP does not solve it."""
        # GLOP can fail from its last basis: a fresh model starts over, with the primal simplex and then the dual
        # one (each has failed where the other solved: CNV on 8 U55Cs, ResNet-50 on 8 U250s)
        self.solved = self.solver.Solve() == self.optimal
        for dual in (False, True):
            if self.solved:
                break
            self._fresh()
            for col in self.columns:
                self._add(col)
            self.solver.SetSolverSpecificParametersAsString(f"use_dual_simplex: {str(dual).lower()}")
            self.solved = self.solver.Solve() == self.optimal
        if not self.solved:
            return None
        # the next solves start from this basis: added columns keep it primal feasible, for the primal simplex
        self.solver.SetSolverSpecificParametersAsString("use_dual_simplex: false")
        mu: dict[Key, np.ndarray] = {}
        for key, limits in self.limit_rows.items():
            for r, row in limits.items():
                if row.dual_value() > 0:  # a level whose limit rows all price 0 shares the DP of the others
                    mu.setdefault(key, np.zeros(len(self.rhs)))[r] = row.dual_value()
        count_price = self.count_row.dual_value() if self.count_row is not None else 0.0
        self.value = self.objective.Value()
        return np.maximum(np.array([row.dual_value() for row in self.rows]), 0.0), mu, count_price
