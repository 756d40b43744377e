"""A tight proven upper bound on total fps: the linear program over instance configurations.

An instance configuration (a *column*) is one copy of the pipeline: a level (its fps), an option per stage
and a slot (card type, SLR) per stage. The master LP runs any non-negative amount of each column within the
cluster's per-SLR resources, the BRAM/URAM/DSP mean limit per SLR, SLLs per SLR boundary and direction and
Ethernet port bandwidth, each summed over the cards of a type. Columns come from pricing (column
generation): given the LP's resource prices, a dynamic program over the stages finds, for every level, the
cheapest configuration. Pricing searches a superset of the real placements (any walk over SLRs and cards,
each crossing charged its narrowest possible stream width, VNx stacks, uplinks and integrality left out),
so the LP is a relaxation of the solver's problem and any dual-feasible price vector proves a bound.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..catalog import Limits
from ..cluster import LINK_GBPS, Cluster
from .pack import PackSettings
from .stages import Pipeline
from .state import AVG_KINDS

MAX_ROUNDS = 200
TOLERANCE = 1e-7  # relative reduced cost below which pricing counts as converged
COLUMNS_PER_ROUND = 16


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
                   np.array([LINK_GBPS * max(t.qsfp_ports, 0) for t in types], float), fclk)

    @property
    def n_slots(self) -> int:
        return len(self.slot_type)

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
        self.fits = fits  # (N, S): the option fits the slot alone
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

    def cheapest(self, price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cost[L, s, slot] of the cheapest fitting option within level L under `price` (N, S), and which."""
        cost = np.where(self.fits, price, np.inf)
        n, slots = cost.shape
        best = np.empty_like(cost)
        which = np.empty(cost.shape, dtype=np.int64)
        bounds = list(self.starts) + [n]
        for a, b in zip(bounds[:-1], bounds[1:]):  # prefix minima within each stage's cycle-sorted options
            seg = cost[a:b]
            best[a:b] = np.minimum.accumulate(seg, axis=0)
            arg = np.where(seg == best[a:b], np.arange(a, b)[:, None], -1)
            which[a:b] = np.maximum.accumulate(np.where(np.isfinite(seg), arg, -1), axis=0)
        idx = self.last  # (L, stages)
        valid = idx >= 0
        safe = np.where(valid, idx, 0)
        return np.where(valid[:, :, None], best[safe], np.inf), which[safe]


@dataclass
class Column:
    level: int  # index into the levels
    fps: float
    use: np.ndarray


@dataclass
class _Walks:
    """The DP's cheapest walks under one price vector for some levels: per level its cost, last slot and the
    back pointers and options to read the walk back, and the moves it priced crossings with."""

    levels: list[int]
    total: np.ndarray  # (levels,)
    end: np.ndarray  # (levels,)
    back: np.ndarray  # (levels, stages, S)
    which: np.ndarray  # (levels, stages, S)
    moves: tuple[np.ndarray, np.ndarray, np.ndarray]


class ColumnBound:
    """Column generation for the LP; `bound()` returns a proven upper bound on total fps.

    An instance uses at most k = min(cards of a type, max cards per instance) cards of each type, so it uses at
    most k times one card's resources, mean budget, SLLs and ports of each slot, boundary and type (its
    *per-instance limit*). Pricing only checks each option against an SLR, so without that limit the LP runs
    configurations that would need several cards' worth of one SLR at a fraction each. The master therefore
    has, per level with columns, the limit for the average instance of that level (sum over its columns of
    x_j (use_j - limit) <= 0: every real instance meets it, so does any mix of them). Its dual mu_L >= 0 enters
    pricing as a Lagrangian term: for a real instance R of level L, y.use_R >= (y + mu_L).use_R - mu_L.limit,
    and the DP under the prices y + mu_L bounds the first term from below, so the bound stays proven for any
    mu_L. The limit term is charged once per instance, not per visit of a slot."""

    def __init__(self, pipeline: Pipeline, cluster: Cluster, limits: Limits, settings: PackSettings | None = None):
        settings = settings or PackSettings()
        self.pipeline = pipeline
        self.cap = Capacity.of(cluster, limits)
        self.tables = _Tables(pipeline, self.cap)
        self.boundaries = self.cap.boundary_rows()
        self.fps = self.cap.fclk_mhz * 1e6 / self.tables.levels
        # a latency floor rules the slower levels out
        self.allowed = np.flatnonzero(self.fps >= settings.min_instance_fps * (1 - 1e-9)).tolist()
        self.rhs = self._row_limits(self.cap.count)
        self.per_instance = self._row_limits(np.minimum(self.cap.count, settings.max_cards_per_instance))
        s, n_types = self.cap.n_slots, len(self.cap.count)
        self.n_res, self.n_mean, self.n_sll, self.n_types = 5 * s, s, len(self.boundaries), n_types

    def _row_limits(self, cards: np.ndarray) -> np.ndarray:
        """Each row's limit (resources and mean budget per slot, SLLs per boundary, ports out and in per type)
        for `cards` cards of each type."""
        c = self.cap
        return np.concatenate([
            (c.cap * cards[c.slot_type][:, None]).ravel(),
            c.mean_budget * cards[c.slot_type],
            np.array([c.sll[t] * cards[t] for t, _, _ in self.boundaries]),
            c.ports_gbps * cards, c.ports_gbps * cards,
        ])

    # -- dual vector layout ---------------------------------------------------------------------
    def _split(self, y: np.ndarray):
        i = 0
        parts = []
        for size in (self.n_res, self.n_mean, self.n_sll, self.n_types, self.n_types):
            parts.append(y[i:i + size])
            i += size
        res, mean, sll, out, inn = parts
        return res.reshape(-1, 5), mean, sll, out, inn

    def _moves(self, sll_price: np.ndarray, out: np.ndarray, inn: np.ndarray):
        """Per slot pair: SLL price summed over the walk inside a card (walk), and for a hand-off to another
        card the SLL prices to and from the Ethernet SLRs (hop_sll) plus the port prices (hop_net)."""
        c, s = self.cap, self.cap.n_slots
        price = {(a, b): sll_price[i] for i, (_, a, b) in enumerate(self.boundaries)}
        walk = np.full((s, s), np.inf)
        for a in range(s):
            for b in range(s):
                if c.slot_type[a] == c.slot_type[b]:
                    walk[a, b] = sum(price[x, y] for x, y in self._path(a, b))
        to_eth = np.array([walk[a, c.eth_slot[c.slot_type[a]]] for a in range(s)])
        from_eth = np.array([walk[c.eth_slot[c.slot_type[b]], b] for b in range(s)])
        hop_net = out[c.slot_type][:, None] + inn[c.slot_type][None, :]
        single = (c.slot_type[:, None] == c.slot_type[None, :]) & (c.count[c.slot_type][:, None] < 2)
        hop_net = np.where(single, np.inf, hop_net)
        return walk, to_eth[:, None] + from_eth[None, :], hop_net

    def _path(self, a: int, b: int) -> list[tuple[int, int]]:
        """Adjacent slot pairs crossed walking from slot a to slot b of the same card type."""
        step = 1 if b > a else -1
        return [(x, x + step) for x in range(a, b, step)]

    def price(self, y: np.ndarray, mu: dict[int, np.ndarray]) -> list[tuple[float, Column]]:
        """Per allowed level, a lower bound on the reduced cost / fps of its cheapest real configuration under
        the duals y of the cluster rows and mu[level] of the per-instance limit rows (none: 0), and the walk
        that attains it, best first. Levels without limit duals share one DP; each other level gets its own."""
        found = []
        shared = [lv for lv in self.allowed if lv not in mu]
        groups = ([(y, shared)] if shared else []) + [(y + mu[lv], [lv]) for lv in self.allowed if lv in mu]
        for prices, levels in groups:
            walks = self._walks(prices, levels)
            for i, lv in enumerate(levels):
                if np.isfinite(walks.total[i]):
                    credit = float(mu[lv] @ self.per_instance) if lv in mu else 0.0
                    found.append(((self.fps[lv] - walks.total[i] + credit) / self.fps[lv], lv, walks, i))
        found.sort(key=lambda f: -f[0])
        return [(r, self._column(walks, i)) for r, _, walks, i in found]

    def _walks(self, y: np.ndarray, levels: list[int]) -> _Walks:
        """The cheapest walk of each of `levels` under prices y (DP over the stages, a slot per stage)."""
        res, mean, sll, out, inn = self._split(y)
        t = self.tables
        slot_price = res + mean[:, None] * self.cap.mean_weight  # (S, 5)
        cost, which = (a[levels] for a in t.cheapest(t.res @ slot_price.T))
        moves = self._moves(sll, out, inn)
        walk, hop_sll, hop_net = (np.nan_to_num(m, posinf=1e30) for m in moves)
        n_levels, n_stages, s = cost.shape
        f = cost[:, 0, :]
        back = np.zeros((n_levels, n_stages, s), dtype=np.int64)
        gbps = t.bits[None, :] * self.fps[levels][:, None] / 1e9  # (L, P)
        for p in range(1, n_stages):
            w = t.width[levels, p][:, None, None]
            move = np.minimum(walk[None] * w, hop_sll[None] * w + hop_net[None] * gbps[:, p][:, None, None])
            move = np.where(np.eye(s, dtype=bool)[None], 0.0, move)
            cand = f[:, :, None] + move
            back[:, p] = cand.argmin(axis=1)
            f = np.take_along_axis(cand, back[:, p][:, None, :], axis=1)[:, 0, :] + cost[:, p, :]
        end = f.argmin(axis=1)
        total = f[np.arange(n_levels), end]
        return _Walks(levels, total, end, back, which, moves)

    def _column(self, walks: _Walks, i: int) -> Column:
        t, c = self.tables, self.cap
        lv = walks.levels[i]
        n_stages = walks.back.shape[1]
        slots = [0] * n_stages
        slots[-1] = walks.end[i]
        for p in range(n_stages - 1, 0, -1):
            slots[p - 1] = walks.back[i, p, slots[p]]
        use = np.zeros(len(self.rhs))
        res = use[:self.n_res].reshape(-1, 5)
        mean = use[self.n_res:self.n_res + self.n_mean]
        base = self.n_res + self.n_mean
        sll_index = {(a, b): base + i for i, (_, a, b) in enumerate(self.boundaries)}
        net = base + self.n_sll
        for p, slot in enumerate(slots):
            option = walks.which[i, p, slot]
            res[slot] += t.res[option]
            mean[slot] += t.res[option] @ c.mean_weight[slot]
            if p == 0 or slots[p - 1] == slot:
                continue
            a, b = slots[p - 1], slot
            width = t.width[lv, p]
            gbps = t.bits[p] * self.fps[lv] / 1e9
            walk, hop_sll, hop_net = walks.moves
            if c.slot_type[a] == c.slot_type[b] and walk[a, b] * width <= hop_sll[a, b] * width + hop_net[a, b] * gbps:
                for pair in self._path(a, b):
                    use[sll_index[pair]] += width
            else:
                for pair in self._path(a, c.eth_slot[c.slot_type[a]]) + self._path(c.eth_slot[c.slot_type[b]], b):
                    use[sll_index[pair]] += width
                use[net + c.slot_type[a]] += gbps
                use[net + self.n_types + c.slot_type[b]] += gbps
        return Column(lv, float(self.fps[lv]), use)

    def bound(self) -> float:
        columns: list[Column] = []
        y, mu = np.zeros(len(self.rhs)), {}
        best = math.inf
        for _ in range(MAX_ROUNDS):
            priced = self.price(y, mu)
            if not priced:
                return 0.0  # no level has a fitting option for every stage
            worst = max(r for r, _ in priced)
            dual_value = float(y @ self.rhs)
            if worst < 1:  # (y, mu) / (1 - worst) prices every real instance at least at its fps: a proven bound
                best = min(best, dual_value / (1 - max(worst, 0.0)))
            if worst <= TOLERANCE:
                break
            columns += [col for r, col in priced[:COLUMNS_PER_ROUND] if r > TOLERANCE]
            y, mu = self._master(columns)
        return best

    def _master(self, columns: list[Column]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The restricted master LP over `columns`: duals of the cluster rows, and per level the duals of
        its per-instance limit rows (only rows some column of the level exceeds: the others cannot bind)."""
        from ortools.linear_solver import pywraplp  # only --certify needs the LP solver: plans load faster

        solver = pywraplp.Solver.CreateSolver("GLOP")
        x = [solver.NumVar(0, solver.infinity(), "") for _ in columns]
        use = np.array([col.use for col in columns])
        rows = [self._row(solver, x, use[:, r], float(rhs)) for r, rhs in enumerate(self.rhs)]
        limit_rows = {}
        for lv in sorted({col.level for col in columns}):
            at = np.array([col.level == lv for col in columns])
            over = use[at] - self.per_instance[None, :]
            for r in np.flatnonzero((over > 1e-9).any(axis=0)):
                limit_rows[lv, r] = self._row(solver, x, np.where(at, use[:, r] - self.per_instance[r], 0.0), 0.0)
        objective = solver.Objective()
        for var, col in zip(x, columns):
            objective.SetCoefficient(var, col.fps)
        objective.SetMaximization()
        solver.Solve()
        mu: dict[int, np.ndarray] = {}
        for (lv, r), row in limit_rows.items():
            mu.setdefault(lv, np.zeros(len(self.rhs)))[r] = max(row.dual_value(), 0.0)
        return np.maximum(np.array([row.dual_value() for row in rows]), 0.0), mu

    @staticmethod
    def _row(solver, x: list, coefficients: np.ndarray, rhs: float):
        row = solver.Constraint(-solver.infinity(), rhs)
        for j in np.flatnonzero(coefficients):
            row.SetCoefficient(x[j], float(coefficients[j]))
        return row
