"""The exact reference: the solver's problem on one card group as a mixed-integer program (SCIP).

Not in the planning path: benchmarks and slow tests use it to learn the true optimum (or a proven bound, the
MILP's own dual bound, where the time limit ends the search) and so how far plans and the LP bound are off.

Same rules as the packer (pack.py, placers.py, state.py). Up to K instances (K from a proven count bound);
instance k puts every stage s on one (card, SLR) slot with one option: binary x[k, s, option, card, slr].
- fps: F_k <= clock / cycles of the option every stage uses (so F_k = clock / slowest stage); the instance
  runs at the slowest clock of the cards it uses. Options are the stage's Pareto front over cycles,
  resources and stream widths (a dominated option is never needed). The objective is the sum of F_k.
- route: each card is entered at most once per instance (its stages are one run); on each card the walk
  over SLRs goes one way (crossing up and crossing down a boundary exclude each other), so a stream that
  leaves a card walks towards its Ethernet SLR and one that arrives walks away from it.
- a crossing of SLR boundary (r, r+1) at cut p uses the stream width of the options producing the edges
  over p (linearised with the width's upper bound), against SLLs per boundary and direction.
- a card hand-off opens VNx on both cards (resources on their Ethernet SLR, once per card) and uses
  bits-over-the-cut x F_k of the sender's and receiver's port bandwidth and, across leaf switches, uplinks.
- per SLR: resources within the utilisation limits and the BRAM/URAM/DSP mean limit, as GroupState says.
Relay cards that only forward a stream are left out: a direct hand-off is never worse.

Given `levels` (cycles budgets), the model asks instead whether one instance per level fits together: instance
k only has the options of level k's Pareto front over resources and widths (within a level cycles no longer
matter, so the front is a few options per stage: ~550 for ResNet-50's 171 stages against 8,881 over all levels),
runs at its level's fps, and there is no objective. exact_search.py searches such questions for the zoo models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ortools.linear_solver import pywraplp

from ..catalog import Limits
from ..cluster import Cluster
from .pack import GroupPacker, PackSettings
from .stages import Pipeline, StageOption
from .state import EPS, GroupState


@dataclass
class ExactResult:
    fps: float  # the best plan the MILP found (0 if none)
    bound: float  # proven upper bound: the MILP's dual bound (equals fps when optimal)
    optimal: bool
    instance_fps: list[float]
    max_instances: int
    seconds: float
    walks: list[list[tuple[int, int]]] = field(default_factory=list)  # per instance found: (card, SLR) per stage


def front(options: Iterable[StageOption], min_fps_cycles: float = math.inf) -> list[StageOption]:
    """Options no other option beats or equals in cycles, every resource and every stream width."""
    kept: list[StageOption] = []
    for option in sorted(options, key=lambda o: (o.cycles, o.res, o.out_widths)):
        if option.cycles > min_fps_cycles:
            continue
        vector = (option.cycles, *option.res, *option.out_widths)
        if not any(all(a <= b for a, b in zip((k.cycles, *k.res, *k.out_widths), vector)) for k in kept):
            kept.append(option)
    return kept


def instance_limit(pipeline: Pipeline, cluster: Cluster, limits: Limits, settings: PackSettings) -> int:
    """A proven upper bound on how many instances fit the cluster (any level)."""
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, limits, None, settings)
    # the slowest level allows every option, so it needs the least of everything and fits the most
    return int(math.floor(packer.instance_bound(pipeline.levels()[-1:]) + 1e-6))


class ExactModel:
    """Up to K instances of any speed; or, given `levels`, exactly one instance per level (its cycles budget)
    with the options of that level's Pareto front (a feasibility question: exact_search.py asks it)."""

    def __init__(self, pipeline: Pipeline, cluster: Cluster, limits: Limits | None = None,
                 settings: PackSettings | None = None, max_instances: int | None = None,
                 levels: list[int] | None = None):
        self.pipeline = pipeline
        self.cluster = cluster
        self.cards = cluster.cards
        self.limits = limits or Limits()
        self.settings = settings or PackSettings()
        uplinks = {name: switch.uplink_gbps for name, switch in cluster.switches.items()}
        self.state = GroupState.fresh(self.cards, cluster.catalog, self.limits, uplinks)
        self.clock = [c.type.fclk_mhz * 1e6 for c in self.cards]
        floor = self.settings.min_instance_fps
        slowest = max(self.clock) / floor if floor else math.inf
        self.levels = sorted(levels) if levels is not None else None
        if self.levels is None:
            limit = instance_limit(pipeline, cluster, self.limits, self.settings)
            self.K = limit if max_instances is None else min(limit, max_instances)
            self.options = [[front(stage.options, slowest) for stage in pipeline.stages]] * self.K
        else:  # cycles do not matter within a level, so its front is over resources and widths alone
            if len(set(self.clock)) > 1:
                raise ValueError("instances of fixed levels need cards of one clock")
            self.K = len(self.levels)
            self.options = [[pipeline.pareto(s, level) for s in range(len(pipeline.stages))] for level in self.levels]
        self.fmax = max((max(self.clock) / max(min(o.cycles for o in opts) for opts in options)
                         for options in self.options if all(options)), default=0.0)
        self.slots = [(c, r) for c, card in enumerate(self.cards) for r in range(card.type.n_slrs)]

    # -- building -----------------------------------------------------------------------------
    def solve(self, time_limit: float = 300.0, threads: int = 1) -> ExactResult:
        started = time.perf_counter()
        if not all(all(options) for options in self.options) or self.K == 0:
            return ExactResult(0.0, 0.0, True, [], self.K, time.perf_counter() - started)
        m = pywraplp.Solver.CreateSolver("SCIP")
        m.SetNumThreads(threads)
        m.SetTimeLimit(int(time_limit * 1000))
        self.m = m
        self.eth = [m.BoolVar(f"eth{c}") for c in range(len(self.cards))] if len(self.cards) > 1 else []
        # per slot: (variable, amount) terms of the five resources, then of the mean share
        self.load_terms: dict[tuple[int, int], list[list]] = {slot: [[] for _ in range(6)] for slot in self.slots}
        self.sll_terms: dict[tuple[int, int, int], list] = {}
        self.port_terms: dict[tuple[str, int], list] = {}
        self.uplink_terms: dict[str, list] = {}
        self.uses = []
        self.x = []
        fps = [self._instance(k) for k in range(self.K)]
        for k in range(self.K - 1):  # instances are interchangeable: order them
            m.Add(fps[k] >= fps[k + 1])
        self._capacities()
        if self.levels is None:
            m.Maximize(sum(fps))
        else:  # every instance runs at its level; any placement answers the question
            for k, level in enumerate(self.levels):
                m.Add(fps[k] >= self.clock[0] / level - EPS)
        status = m.Solve()
        seconds = time.perf_counter() - started
        if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            bound = m.Objective().BestBound() if status != pywraplp.Solver.INFEASIBLE else 0.0
            if self.levels is not None:  # unknown: the levels' fps may still fit
                bound = 0.0 if status == pywraplp.Solver.INFEASIBLE else sum(self.clock[0] / lv for lv in self.levels)
            return ExactResult(0.0, max(bound, 0.0), status == pywraplp.Solver.INFEASIBLE, [], self.K, seconds)
        values = [f.solution_value() for f in fps]
        active = [k for k in range(self.K) if values[k] > EPS]
        walks = [[key[2:] for key, v in sorted(self.x[k].items()) if v.solution_value() > 0.5] for k in active]
        value = sum(values[k] for k in active)
        optimal = status == pywraplp.Solver.OPTIMAL or self.levels is not None
        bound = value if optimal else max(m.Objective().BestBound(), value)
        return ExactResult(value, bound, optimal, [values[k] for k in active], self.K, seconds, walks)

    def _instance(self, k: int):
        m, n = self.m, len(self.pipeline.stages)
        cards = range(len(self.cards))
        active = m.BoolVar(f"a{k}")
        fps = m.NumVar(0.0, self.fmax, f"F{k}")
        x = {}
        options_k = self.options[k]
        for s, options in enumerate(options_k):
            for o, option in enumerate(options):
                for c, r in self.slots:
                    if self.state.fits(c, r, option.res) and self.clock[c] / option.cycles >= \
                            self.settings.min_instance_fps - EPS:
                        x[s, o, c, r] = m.BoolVar(f"x{k}_{s}_{o}_{c}_{r}")
        by_stage = [[(key, v) for key, v in x.items() if key[0] == s] for s in range(n)]
        for s in range(n):
            m.Add(sum(v for _, v in by_stage[s]) == active)
            m.Add(fps <= sum(v * (self.clock[c] / options_k[s][o].cycles) for (_, o, c, _), v in by_stage[s]))
        m.Add(fps >= self.settings.min_instance_fps * active)
        self.x.append(x)
        self._loads(x, options_k)
        on = [[sum(v for (_, _, c, _), v in by_stage[s] if c == card) for card in cards] for s in range(n)]
        uses = [m.BoolVar(f"u{k}_{c}") for c in cards]
        for s in range(n):
            for c in cards:
                m.Add(uses[c] >= on[s][c])
        m.Add(sum(uses) <= self.settings.max_cards_per_instance)
        self.uses.append(uses)
        for c in cards:  # an instance on a slower card runs at that card's clock
            if self.clock[c] < max(self.clock):
                for s in range(n):
                    m.Add(fps <= sum(v * (self.clock[c] / options_k[s][o].cycles) for (_, o, _, _), v in
                                     by_stage[s]) + self.fmax * (1 - uses[c]))
        width = self._widths(x, options_k)
        below = {}  # (s, c, r): stage s on card c at an SLR <= r
        for s in range(n):
            for c in cards:
                for r in range(self.cards[c].type.n_slrs):
                    below[s, c, r] = sum(v for (_, _, cc, rr), v in by_stage[s] if cc == c and rr <= r)
        enter, leave = self._hand_offs(k, on, fps)
        self._walks(k, on, below, enter, leave, width)
        return fps

    def _loads(self, x, options) -> None:
        for (s, o, c, r), v in x.items():
            res = options[s][o].res
            terms = self.load_terms[c, r]
            for kind in range(5):
                if res[kind]:
                    terms[kind].append((v, res[kind]))
            share = self.state.avg_weight(c, r, res)
            if share:
                terms[5].append((v, share))

    def _widths(self, x, options) -> list:
        """Per cut: the stream width crossing it (an expression) and its upper bound."""
        out = [(0, 0.0)]
        for p in range(1, len(self.pipeline.stages)):
            expr, most = 0, 0.0
            for e in self.pipeline.crossing(p):
                widths = [o.out_widths[e.src_pos] for o in options[e.src]]
                expr += sum(v * widths[o] for (s, o, _, _), v in x.items() if s == e.src)
                most += max(widths)
            out.append((expr, most))
        return out

    def _hand_offs(self, k: int, on, fps):
        """Entering and leaving cards between stages: each card one run; VNx, ports and uplinks."""
        m, n = self.m, len(self.pipeline.stages)
        enter, leave = {}, {}
        if len(self.cards) == 1:
            return enter, leave
        for c in range(len(self.cards)):
            for p in range(1, n):
                enter[p, c] = m.NumVar(0, 1, "")
                leave[p, c] = m.NumVar(0, 1, "")
                m.Add(enter[p, c] >= on[p][c] - on[p - 1][c])
                m.Add(leave[p, c] >= on[p - 1][c] - on[p][c])
            m.Add(on[0][c] + sum(enter[p, c] for p in range(1, n)) <= 1)
            m.Add(self.eth[c] >= sum(enter[p, c] for p in range(1, n)))
            m.Add(self.eth[c] >= sum(leave[p, c] for p in range(1, n)))
        for p in range(1, n):
            bits = sum(e.bits_per_frame for e in self.pipeline.crossing(p)) / 1e9
            for c in range(len(self.cards)):
                for direction, flag in (("out", leave[p, c]), ("in", enter[p, c])):
                    self.port_terms.setdefault((direction, c), []).append(self._rate(fps, flag, bits))
            for a in range(len(self.cards)):
                for b in range(len(self.cards)):
                    sa, sb = self.cards[a].switch, self.cards[b].switch
                    if sa == sb or not ({sa, sb} & set(self.state.uplinks)):
                        continue
                    pair = m.NumVar(0, 1, "")
                    m.Add(pair >= leave[p, a] + enter[p, b] - 1)
                    rate = self._rate(fps, pair, bits)
                    for sw in (sa, sb):
                        self.uplink_terms.setdefault(sw, []).append(rate)
        return enter, leave

    def _rate(self, fps, flag, bits: float):
        """bits x fps where flag is 1, else 0 (flag only ever costs, so a lower bound suffices)."""
        rate = self.m.NumVar(0, self.m.infinity(), "")
        self.m.Add(rate >= bits * fps - bits * self.fmax * (1 - flag))
        return rate

    def _walks(self, k: int, on, below, enter, leave, width) -> None:
        """SLR boundary crossings, one direction per card, and the SLLs they use."""
        m, n = self.m, len(self.pipeline.stages)
        for c, card in enumerate(self.cards):
            up_dir, down_dir = m.BoolVar(""), m.BoolVar("")
            m.Add(up_dir + down_dir <= 1)
            eth = card.type.eth_slr
            for r in range(card.type.n_slrs - 1):
                for p in range(1, n):
                    on_prev, on_next = on[p - 1][c], on[p][c]
                    up_lows = [below[p - 1, c, r] + (on_next - below[p, c, r]) - 1]
                    down_lows = [(on_prev - below[p - 1, c, r]) + below[p, c, r] - 1]
                    if leave:
                        if r < eth:  # leaving from at or below r walks up to the Ethernet SLR
                            up_lows.append(below[p - 1, c, r] + leave[p, c] - 1)
                        else:
                            down_lows.append(on_prev - below[p - 1, c, r] + leave[p, c] - 1)
                        if r >= eth:  # arriving at the Ethernet SLR and walking up past r
                            up_lows.append(on_next - below[p, c, r] + enter[p, c] - 1)
                        else:
                            down_lows.append(below[p, c, r] + enter[p, c] - 1)
                    for lows, direction, pair in ((up_lows, up_dir, (r, r + 1)), (down_lows, down_dir, (r + 1, r))):
                        crossing = m.NumVar(0, 1, "")
                        for low in lows:
                            m.Add(crossing >= low)
                        m.Add(direction >= crossing)
                        expr, most = width[p]
                        if most > 0:
                            used = m.NumVar(0, most, "")
                            m.Add(used >= expr - most * (1 - crossing))
                            self.sll_terms.setdefault((c, *pair), []).append((used, most))

    def _capacities(self) -> None:
        m = self.m
        for (c, r), terms in self.load_terms.items():
            slot = self.state.slots[c][r]
            eth_here = self.eth and r == self.cards[c].type.eth_slr
            eth_cost = self.state.eth_cost[c]
            for kind in range(6):
                expr = sum(v * a for v, a in terms[kind])
                if kind < 5:
                    cap = slot.free[kind]
                    extra = eth_cost[kind]
                else:
                    cap = slot.avg_free
                    extra = self.state.avg_weight(c, r, eth_cost)
                if eth_here and extra:
                    expr += self.eth[c] * extra
                if terms[kind] or (eth_here and extra):
                    m.Add(expr <= cap + EPS)
        for (c, a, b), terms in self.sll_terms.items():
            cap = self.state.sll[c][(a, b)]
            if self.K * max(most for _, most in terms) > cap:  # a walk crosses a boundary at most once
                m.Add(sum(v for v, _ in terms) <= cap + EPS)
        for (direction, c), rates in self.port_terms.items():
            cap = (self.state.net_out if direction == "out" else self.state.net_in)[c]
            m.Add(sum(rates) <= cap + EPS)
        for sw, rates in self.uplink_terms.items():
            m.Add(sum(rates) <= self.state.uplinks[sw] + EPS)
        if self.settings.exclusive_cards:
            for c in range(len(self.cards)):
                m.Add(sum(uses[c] for uses in self.uses) <= 1)


def exact_optimum(pipeline: Pipeline, cluster: Cluster, limits: Limits | None = None,
                  settings: PackSettings | None = None, time_limit: float = 300.0,
                  max_instances: int | None = None) -> ExactResult:
    """The best total fps of `pipeline` on `cluster` as one card group, proven within `time_limit` seconds
    (else the best found and the MILP's dual bound)."""
    return ExactModel(pipeline, cluster, limits, settings, max_instances).solve(time_limit)
