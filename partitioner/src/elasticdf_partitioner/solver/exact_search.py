"""The exact optimum of models too big for exact.py's MILP as a whole: a search over multisets of instance levels.

Not in the planning path (benchmarks and slow tests use it, like exact.py). The total fps is the sum of the
instances' fps, and an instance's fps is the clock over its level (the cycles of its slowest option), so the
optimum is the fastest multiset of levels whose instances fit the group together. Whether one multiset fits is
a small question for exact.py's model with `levels` (one instance per level, only that level's Pareto front over
resources and widths, no objective): ~550 option binaries per instance and SLR on ResNet-50 instead of the
10^5-10^6 of the whole model. Same rules as the packer, since it is the same model.

Fitting is monotone: a multiset that fits still fits with an instance left out or slowed down (a slower level
admits every option of a faster one). So a multiset that does not fit proves infeasible every multiset that
dominates it: at least as many instances, the fastest ones matched in order each at least as fast.

The search: candidates are the multisets whose fps lies above the incumbent (a plan's fps) and at most `upper`
(a proven bound), that pass the necessary tests below, of levels at most as fast as the fastest level one
instance fits alone (a binary search over the levels first). They are asked in ascending fps: one that fits
raises the incumbent and drops every candidate not above it, one that does not drops every candidate that
dominates it. When none is left the incumbent is the optimum; at the time limit (or where a question timed out)
the largest fps among the candidates left is a proven bound. Necessary tests, both proven for any placement
because every instance of a level uses at least what the level's least option per stage uses:
- per resource, the least the instances' levels need together is within what the group has (free_total);
- their mean shares (GroupPacker.instance_bound: the least share of the five resources' capacities, averaged)
  add up to at most 1.
Levels whose Pareto fronts equal a faster level's are left out: that faster level fits the same instances.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field

from ..catalog import Limits
from ..cluster import Cluster
from .exact import ExactModel
from .pack import PackSettings
from .stages import Pipeline
from .state import EPS, GroupState

CHECK_SECONDS = 60.0  # one multiset question; one that runs out is left open (the bound keeps it)
MAX_CANDIDATES = 300_000  # past this many the enumeration stops and only `upper` stays proven
PROOF_NODES = 100_000  # multisets better_may_exist visits before it gives up (a proof costs at most ~1 s)


@dataclass
class SearchResult:
    fps: float  # the best known: the incumbent, or a multiset the search placed
    bound: float  # proven upper bound (equals fps when optimal)
    optimal: bool
    levels: list[int]  # the placed multiset's levels (empty: the incumbent was not beaten)
    walks: list[list[tuple[int, int]]]  # per instance of `levels`: (card, SLR) per stage
    questions: int  # MILP questions asked
    candidates: int  # multisets enumerated above the incumbent
    seconds: float
    open: list[tuple[int, ...]] = field(default_factory=list)  # multisets whose question timed out


def dominates(harder: tuple[int, ...], easier: tuple[int, ...]) -> bool:
    """Whether instances at levels `harder` (ascending) need at least what `easier` (ascending) need: at least as
    many, and matched fastest to fastest, each at least as fast (sorted matching is the best matching)."""
    return len(harder) >= len(easier) and all(h <= e for h, e in zip(harder, easier))


class LevelSearch:
    def __init__(self, pipeline: Pipeline, cluster: Cluster, limits: Limits | None = None,
                 settings: PackSettings | None = None, check_seconds: float = CHECK_SECONDS):
        self.pipeline = pipeline
        self.cluster = cluster
        self.limits = limits or Limits()
        self.settings = settings or PackSettings()
        self.check_seconds = check_seconds
        self.clock = min(c.type.fclk_mhz for c in cluster.cards) * 1e6
        state = GroupState.fresh(cluster.cards, cluster.catalog, self.limits)
        self.free = list(state.free_total())
        self.levels = self._distinct_levels()
        self.least = {lv: list(pipeline.least_resources(lv)) for lv in self.levels}
        self.share = {lv: self._mean_share(lv) for lv in self.levels}
        self.questions = 0
        self.misfits: list[tuple[int, ...]] = []  # multisets proven not to fit
        self.placed: dict[tuple[int, ...], list] = {}  # multisets that fit: their walks

    def fps(self, levels) -> float:
        return sum(self.clock / lv for lv in levels)

    def _distinct_levels(self) -> list[int]:
        """Levels within the latency floor, each with Pareto fronts unlike every faster level's."""
        floor = self.settings.min_instance_fps
        kept, last = [], None
        for level in self.pipeline.levels():
            if level < self.pipeline.min_level() or (floor and self.clock / level < floor - EPS):
                continue
            fronts = tuple(tuple(map(id, self.pipeline.pareto(s, level))) for s in range(len(self.pipeline.stages)))
            if fronts != last:
                kept.append(level)
                last = fronts
        return kept

    def _mean_share(self, level: int) -> float:
        present = [k for k in range(5) if self.free[k] > 0]
        return sum(min(sum(o.res[k] / self.free[k] for k in present) for o in self.pipeline.pareto(s, level))
                   for s in range(len(self.pipeline.stages))) / len(present)

    def fits(self, levels: tuple[int, ...], deadline: float) -> bool | None:
        """Whether instances at `levels` fit the group together (None: the question timed out), from what is
        known where it says (a known misfit it dominates, a known fit that dominates it), else asked."""
        if any(dominates(levels, misfit) for misfit in self.misfits):
            return False
        if any(dominates(fit, levels) for fit in self.placed):
            return True
        self.questions += 1
        model = ExactModel(self.pipeline, self.cluster, self.limits, self.settings, levels=list(levels))
        result = model.solve(max(1.0, min(self.check_seconds, deadline - time.perf_counter())))
        if result.fps > 0:
            self.placed[levels] = result.walks
            return True
        if result.optimal:
            self.misfits.append(levels)
            return False
        return None

    # -- the search ---------------------------------------------------------------------------------
    def solve(self, incumbent: float, upper: float = math.inf, time_limit: float = 600.0) -> SearchResult:
        started = time.perf_counter()
        deadline = started + time_limit
        fastest = self._fastest_alone(deadline)
        levels = self.levels[bisect.bisect_left(self.levels, fastest):] if fastest else []
        best = self._greedy(levels, deadline)
        if self.fps(best) > incumbent + EPS:
            incumbent = self.fps(best)
        else:
            best = ()
        candidates = sorted(self._candidates(levels, incumbent, upper), key=lambda c: (-self.fps(c), len(c)))
        enumerated, opened = len(candidates), []
        while candidates and time.perf_counter() < deadline:
            multiset = candidates.pop(0)
            answer = self.fits(multiset, deadline)
            if answer:  # every candidate above it is out: the optimum, unless an open one above beats it
                best, incumbent, candidates = multiset, self.fps(multiset), []
            elif answer is False:
                core = self._core(multiset, deadline)
                candidates = [c for c in candidates if not dominates(c, core)]
            else:
                opened.append(multiset)
            found = max(self.placed, key=self.fps, default=())
            if self.fps(found) > incumbent + EPS:  # a core's question placed a better multiset
                best, incumbent = found, self.fps(found)
                candidates = [c for c in candidates if self.fps(c) > incumbent + EPS]
        left = candidates + opened
        bound = max([incumbent] + [self.fps(c) for c in left])
        if enumerated > MAX_CANDIDATES:  # candidates were left out: only `upper` is proven
            bound, left = max(bound, upper), left or [()]
        return SearchResult(incumbent, bound, not left, list(best), self.placed.get(best, []), self.questions,
                            enumerated, time.perf_counter() - started, opened)

    def _core(self, misfit: tuple[int, ...], deadline: float) -> tuple[int, ...]:
        """A misfit `misfit` dominates, and so more candidates dominate: its slowest instance left out while the
        rest does not fit either, then the slowest left slowed down while it does not fit (a binary search)."""
        core = misfit
        while len(core) > 1 and time.perf_counter() < deadline and self.fits(core[:-1], deadline) is False:
            core = core[:-1]
        slower = self.levels[bisect.bisect_right(self.levels, core[-1]):]
        lo, hi = 0, len(slower) - 1
        while lo <= hi and time.perf_counter() < deadline:
            middle = (lo + hi) // 2
            if self.fits(core[:-1] + (slower[middle],), deadline) is False:
                core, lo = core[:-1] + (slower[middle],), middle + 1
            else:
                hi = middle - 1
        return core

    def _greedy(self, levels: list[int], deadline: float) -> tuple[int, ...]:
        """A multiset that fits, made by adding the fastest level that still fits (at most as fast as the last
        one added) while one does: the incumbent to beat, and its questions' misfits prune candidates."""
        chosen: tuple[int, ...] = ()
        while levels and len(chosen) < self._most_instances() and time.perf_counter() < deadline:
            lo, hi, found = 0, len(levels) - 1, None
            while lo <= hi and time.perf_counter() < deadline:
                middle = (lo + hi) // 2
                if self.fits(chosen + (levels[middle],), deadline):
                    found, hi = middle, middle - 1
                else:
                    lo = middle + 1
            if found is None:
                break
            chosen, levels = chosen + (levels[found],), levels[found:]
        return chosen

    def _fastest_alone(self, deadline: float) -> int | None:
        """The fastest level one instance fits alone at (None: none fits); a question that times out counts
        as fitting, which only keeps more levels."""
        lo, hi, found = 0, len(self.levels) - 1, None
        while lo <= hi:
            middle = (lo + hi) // 2
            answer = self.fits((self.levels[middle],), deadline) if time.perf_counter() < deadline else None
            if answer is not False:
                found, hi = self.levels[middle], middle - 1
            else:
                lo = middle + 1
        return found

    def _most_instances(self) -> int:
        most = self.settings.max_instances if self.settings.max_instances is not None else math.inf
        return min(most, len(self.cluster.cards)) if self.settings.exclusive_cards else most

    def better_may_exist(self, incumbent: float, upper: float, max_nodes: int = PROOF_NODES) -> bool:
        """False where no multiset of levels above `incumbent` and within `upper` fps passes the necessary tests:
        then no plan beats `incumbent` (a plan's instances run at levels, and the multiset of a plan's levels
        fits, so it passes them; a plan above `upper` cannot exist where `upper` is proven). Asks no MILP. True
        where one passes, or where the enumeration ran past `max_nodes` multisets before deciding."""
        nodes = [0]
        found = self._candidates(self.levels, incumbent, upper, most=0, nodes=nodes, max_nodes=max_nodes)
        return bool(found) or nodes[0] > max_nodes

    def _candidates(self, levels: list[int], incumbent: float, upper: float, most: int = MAX_CANDIDATES,
                    nodes: list[int] | None = None, max_nodes: float = math.inf) -> list[tuple[int, ...]]:
        """Multisets of `levels` above `incumbent` and within `upper` fps that pass the necessary tests, depth
        first with levels ascending; past `most` found (or `max_nodes` multisets visited, counted in `nodes`)
        the enumeration stops, so more than `most` found means some were left out. A branch ends where what is
        left cannot lift the fps above `incumbent`: per resource (and mean share), what is left times the most
        fps per unit any level left gets from it."""
        out: list[tuple[int, ...]] = []
        nodes = nodes if nodes is not None else [0]
        most_instances = self._most_instances()
        # per level: least of the five resources and the mean share it needs; per start: the best fps per unit
        needs = [[*self.least[lv], self.share[lv]] for lv in levels]
        best_rate = [[0.0] * 6 for _ in range(len(levels) + 1)]
        for i in reversed(range(len(levels))):
            best_rate[i] = [max(b, self.clock / levels[i] / n if n > 0 else math.inf)
                            for b, n in zip(best_rate[i + 1], needs[i])]
        capacity = [*self.free, 1.0]

        def extend(prefix: tuple[int, ...], start: int, used: list[float], fps: float) -> None:
            nodes[0] += 1
            if fps > incumbent + EPS:
                out.append(prefix)
            if len(prefix) >= most_instances or start == len(levels) or len(out) > most or nodes[0] > max_nodes:
                return
            left = [c - u for c, u in zip(capacity, used)]
            if fps + min(left[k] * best_rate[start][k] for k in range(6)) <= incumbent + EPS:
                return
            for i in range(start, len(levels)):
                gain = self.clock / levels[i]
                after = [u + n for u, n in zip(used, needs[i])]
                if fps + gain <= upper * (1 + 1e-9) and all(a <= c + EPS for a, c in zip(after, capacity)):
                    extend(prefix + (levels[i],), i, after, fps + gain)

        extend((), 0, [0.0] * 6, 0.0)
        return out


def exact_search(pipeline: Pipeline, cluster: Cluster, incumbent: float, upper: float = math.inf,
                 limits: Limits | None = None, settings: PackSettings | None = None,
                 time_limit: float = 600.0, check_seconds: float = CHECK_SECONDS) -> SearchResult:
    """The best total fps of `pipeline` on `cluster` as one card group above `incumbent` (a plan's fps, known
    to fit) and at most `upper` (a proven bound), proven within `time_limit` seconds (else a proven bound)."""
    return LevelSearch(pipeline, cluster, limits, settings, check_seconds).solve(incumbent, upper, time_limit)
