"""Step 1 (fold): turn a model graph into pipeline stages with their implementation options.

A stage is a run of layers whose foldings are tied (a depthwise SWG and the VVAU/Pool it feeds) or a single
layer. Each stage option fixes folding and variant of every layer in the stage. For a throughput level
(a cycles-per-frame budget) only options within the budget and not dominated in every resource matter.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import os
import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..graph import ModelGraph
from ..options import Option
from ..resources import Resources


@dataclass(frozen=True)
class StageOption:
    cycles: int
    res: Resources
    out_widths: tuple[int, ...]  # per layer of the stage: stream bits per cycle
    layer_options: tuple[Option, ...]


@dataclass
class Stage:
    layers: tuple[int, ...]  # layer indices, consecutive in topological order
    names: tuple[str, ...]
    options: list[StageOption]  # sorted by cycles
    out_bits_per_frame: tuple[int, ...]


@dataclass(frozen=True)
class StageEdge:
    src: int  # stage index
    dst: int
    src_pos: int  # position of the producing layer inside the src stage
    bits_per_frame: int


@dataclass
class Pipeline:
    """The model as the solver sees it: stages in order, edges between stages, published option per stage."""

    model: str
    stages: list[Stage]
    edges: list[StageEdge]
    published: list[StageOption | None]
    _crossings: list[list[StageEdge]] | None = field(default=None, repr=False)
    ratios: dict[float, Resources] = field(default_factory=dict, repr=False)  # fps per resource, by clock
    memo: dict = field(default_factory=dict, repr=False)  # per-level results the search steps reuse
    cache_path: Path | None = field(default=None, repr=False)  # its file in the plan cache (None: not kept)

    def crossing(self, position: int) -> list[StageEdge]:
        """Stage edges a cut before stage `position` crosses."""
        return self.crossings()[position]

    def crossings(self) -> list[list[StageEdge]]:
        if self._crossings is None:
            self._crossings = [[e for e in self.edges if e.src < p <= e.dst] for p in range(len(self.stages) + 1)]
        return self._crossings

    def pareto(self, stage: int, max_cycles: int) -> list[StageOption]:
        return self._pareto_tables()[stage].front(max_cycles)

    def fronts(self, max_cycles: int) -> list[list[StageOption]]:
        """Every stage's Pareto front within the budget (each placer of a level asks for all of them)."""
        key = ("fronts", max_cycles)
        if key not in self.memo:
            self.memo[key] = [table.front(max_cycles) for table in self._pareto_tables()]
        return self.memo[key]

    def _pareto_tables(self) -> list[ParetoTable]:
        """Per stage the ParetoTable of its options; stages that share an option list share its table, and so
        the fronts' lists."""
        return self._per_option_list("pareto_tables", ParetoTable)

    def _per_option_list(self, name: str, make: Callable[[list[StageOption]], object]) -> list:
        """Per stage what `make` makes of its options, memoised under `name`: made once per option list, which
        stages of equal layers share (ResNet-50 repeats its bottlenecks)."""
        if name not in self.memo:
            made: dict[int, object] = {}
            for stage in self.stages:
                if id(stage.options) not in made:
                    made[id(stage.options)] = make(stage.options)
            self.memo[name] = [made[id(stage.options)] for stage in self.stages]
        return self.memo[name]

    def least_resources(self, max_cycles: int) -> Resources | None:
        """Per resource, the least any instance within `max_cycles` can use (None: no folding is that fast).
        The least a stage can use of a resource within the budget is the least over its options within it
        (some Pareto-optimal option attains it), so a prefix minimum over the cycle-sorted options answers it
        without building the Pareto fronts."""
        key = ("least", max_cycles)
        if key not in self.memo:
            least = self.least_per_stage(max_cycles)
            self.memo[key] = None if least is None else Resources(*map(sum, zip(*least)))
        return self.memo[key]

    def least_per_stage(self, max_cycles: int) -> list[list[float]] | None:
        """Per stage, the least of each resource its options within `max_cycles` use (None: some stage has none)."""
        key = ("least_per_stage", max_cycles)
        if key not in self.memo:
            least = []
            for cycles, prefix_min in self._least_tables():
                cut = bisect.bisect_right(cycles, max_cycles)
                if cut == 0:
                    least = None
                    break
                least.append(prefix_min[cut - 1])
            self.memo[key] = least
        return self.memo[key]

    def least_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """The levels at which every stage has an option (ascending), and per level the least of each resource
        an instance of that level uses: the sum over stages of their least within it (levels x 5). Resources are
        whole numbers, so these sums are exact in any order."""
        fastest = self.min_level()
        levels = np.array([lv for lv in self.levels() if lv >= fastest], dtype=np.int64)
        totals = np.zeros((len(levels), 5))
        tables = {id(s.options): table for s, table in zip(self.stages, self._least_tables())}
        for key, count in Counter(id(s.options) for s in self.stages).items():
            cycles, prefix_min = tables[key]
            # each stage's fastest option is within every such level, so every row found is one of its options
            rows = np.searchsorted(cycles, levels, side="right") - 1
            totals += count * np.array(prefix_min)[rows]
        return levels, totals

    def _least_tables(self) -> list[tuple[list[int], list[list[float]]]]:
        """Per stage: its options' cycles (ascending) and, per option, the least of each resource so far."""
        return self._per_option_list("least_tables", _least_table)

    def levels(self) -> list[int]:
        """Every distinct cycles-per-frame value an option can have, ascending."""
        if "levels" not in self.memo:
            self.memo["levels"] = sorted({o.cycles for s in self.stages for o in s.options})
        return list(self.memo["levels"])

    def min_level(self) -> int:
        """The fastest bottleneck any folding reaches (each stage at its fastest option)."""
        return max(s.options[0].cycles for s in self.stages)


def _least_table(options: list[StageOption]) -> tuple[list[int], list[list[float]]]:
    """The options' cycles (ascending) and, per option, the least of each resource among it and those before."""
    return [o.cycles for o in options], np.minimum.accumulate(np.array([o.res for o in options], dtype=float),
                                                              axis=0).tolist()


def _tie_groups(graph: ModelGraph) -> list[list[int]]:
    """Consecutive layer runs that must be folded together."""
    joined = set()
    for tie in graph.ties:
        p, c = graph.index(tie.producer), graph.index(tie.consumer)
        lo, hi = sorted((p, c))
        joined.update(range(lo, hi))  # join each layer in [lo, hi) with its successor
    groups: list[list[int]] = [[0]] if graph.layers else []
    for i in range(1, len(graph.layers)):
        if i - 1 in joined:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _tied_combinations(graph: ModelGraph, group: list[int]) -> list[tuple[Option, ...]]:
    names = {graph.layers[i].name: pos for pos, i in enumerate(group)}
    ties = [t for t in graph.ties if t.producer in names and t.consumer in names]
    per_layer = [graph.layers[i].options() for i in group]
    combos = []
    for combo in itertools.product(*per_layer):
        if all(dict(combo[names[t.producer]].folding).get(t.producer_attr)
               == dict(combo[names[t.consumer]].folding).get(t.consumer_attr) for t in ties):
            combos.append(combo)
    if not combos:
        raise InputError(f"layers {[graph.layers[i].name for i in group]}", "tied foldings admit no common value")
    return combos


def _stage_option(combo: tuple[Option, ...]) -> StageOption:
    if len(combo) == 1:  # most stages; it shares its option's resources: fewer objects to keep and read back
        option = combo[0]
        return StageOption(option.cycles, option.res, (option.out_width,), combo)
    res = Resources(*map(sum, zip(*(option.res for option in combo))))
    return StageOption(max(o.cycles for o in combo), res, tuple(o.out_width for o in combo), combo)


def build_pipeline(graph: ModelGraph) -> Pipeline:
    """The graph's pipeline, kept on the graph until its folding settings change (re-planning is frequent)."""
    signature = tuple(tuple(sorted(layer.settings.items(), key=str)) for layer in graph.layers)
    cached = graph.__dict__.get("_pipeline")
    if cached is None or cached[0] != signature:
        cached = (signature, _cached_on_disk(graph))
        graph.__dict__["_pipeline"] = cached
    return cached[1]


def _cache_dir() -> Path:
    return Path(os.environ.get("ELASTICDF_PLAN_CACHE", Path.home() / ".cache" / "elasticdf")) / "pipelines"


@cache
def _code_digest() -> str:
    """The cost model's source: a changed formula must never be served from an old cache entry."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted([*package.glob("ops/*.py"), *package.glob("models/*.py"), package / "options.py",
                        package / "graph.py", package / "resources.py", Path(__file__).resolve()]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cached_on_disk(graph: ModelGraph) -> Pipeline:
    """The first plan of a model builds its option tables (about a second for ResNet-50); later processes
    read them back from a file keyed by the graph's and the cost model's digest."""
    try:
        state = pickle.dumps((graph.name, graph.edges, graph.ties, [(type(layer).__qualname__, layer.__dict__)
                                                                    for layer in graph.layers]))
    except (pickle.PicklingError, TypeError, AttributeError):
        return _build_pipeline(graph)  # a graph we cannot digest is simply built
    path = _cache_dir() / f"{hashlib.sha256(state + _code_digest().encode()).hexdigest()}.pickle"
    pipeline = _read(path)
    if pipeline is None:
        pipeline = _build_pipeline(graph)
        _write(path, pipeline)
    pipeline.cache_path = path
    return pipeline


def _read(path: Path):
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None


def _write(path: Path, value) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(pickle.dumps(value))
        partial.replace(path)  # atomic: a concurrent reader sees the whole file or none
    except OSError:
        pass  # a read-only home only costs the rebuild


@cache
def _search_digest() -> str:
    """The search code's source (solver/*.py): kept search results are only served to the code that made them."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def kept_search(pipeline: Pipeline, key: tuple, search: Callable[[], object]):
    """The result of a deterministic search over this pipeline, by a key that holds everything else it depends
    on: from memory, else from the plan cache next to the pipeline's file, else searched and kept in both (a
    restarted operator, or the next CLI run, re-plans a model without searching again)."""
    if "searches" not in pipeline.memo:
        path = pipeline.cache_path and pipeline.cache_path.with_suffix(f".searches-{_search_digest()}.pickle")
        pipeline.memo["searches"] = (path, (_read(path) if path else None) or {})
    path, kept = pipeline.memo["searches"]
    if key not in kept:
        kept[key] = search()
        if path:
            _write(path, kept)
    return kept[key]


def _build_pipeline(graph: ModelGraph) -> Pipeline:
    groups = _tie_groups(graph)
    stage_of = {layer: s for s, group in enumerate(groups) for layer in group}
    stages, published = [], []
    shared: dict[int, tuple[list[Option], list[StageOption]]] = {}
    for group in groups:
        stages.append(Stage(
            layers=tuple(group),
            names=tuple(graph.layers[i].name for i in group),
            options=_group_options(graph, group, shared),
            out_bits_per_frame=tuple(graph.layers[i].out_bits_per_frame for i in group),
        ))
        published.append(_published(graph, group))
    edges = sorted({
        StageEdge(stage_of[u], stage_of[v], groups[stage_of[u]].index(u), graph.layers[u].out_bits_per_frame)
        for u, v in graph.edges if stage_of[u] != stage_of[v]
    }, key=lambda e: (e.src, e.dst, e.src_pos))
    pipeline = Pipeline(graph.name, stages, edges, published)
    # the tables every plan reads first (each stage's Pareto fronts and least resources by cycle budget) are made
    # now, so the plan cache's file holds them too: a later process reads them instead of making them again
    pipeline._pareto_tables()
    pipeline._least_tables()
    return pipeline


def _group_options(graph: ModelGraph, group: list[int],
                   shared: dict[int, tuple[list[Option], list[StageOption]]]) -> list[StageOption]:
    """A stage's options, sorted by cycles and resources. One-layer stages of equal layers (ResNet-50 repeats its
    bottlenecks) get one shared list, as the layers share theirs: the pipeline makes, caches and prunes it once.
    `shared` holds each layer option list it was made from, so that list's id stays unique meanwhile."""
    if len(group) > 1:
        return _sorted_options(_tied_combinations(graph, group))
    layer_options = graph.layers[group[0]].options()
    if id(layer_options) not in shared:
        shared[id(layer_options)] = (layer_options, _sorted_options([(o,) for o in layer_options]))
    return shared[id(layer_options)][1]


def _sorted_options(combos: list[tuple[Option, ...]]) -> list[StageOption]:
    return sorted(map(_stage_option, combos), key=lambda o: (o.cycles, o.res))  # combos are distinct


def _published(graph: ModelGraph, group: list[int]) -> StageOption | None:
    try:
        return _stage_option(tuple(graph.layers[i].current() for i in group))
    except (KeyError, ValueError, InputError):
        return None


class ParetoTable:
    """The Pareto fronts of one stage's options (sorted by cycles) for every cycle budget, from one pass.

    In the order (res, out_widths, cycles), an option is on the front of a budget unless an option earlier in
    that order and within the budget beats or equals it in every resource and output stream width (whoever
    dominates a dominated option dominates what it dominates). So per option, the lowest option index that
    dominates it from earlier in the order decides for every budget at once: the option is on the fronts of
    budgets that admit it but not that one."""

    def __init__(self, options: list[StageOption]):
        self.options = options
        self.cycles = [o.cycles for o in options]
        width = 5 + (len(options[0].out_widths) if options else 0)
        vectors = np.array([(*o.res, *o.out_widths) for o in options], dtype=float).reshape(len(options), width)
        keys = [vectors[:, k] for k in range(vectors.shape[1])]
        rank = np.empty(len(options), dtype=int)
        self.order = np.lexsort([np.array(self.cycles, dtype=float), *reversed(keys)])  # stable, like sorted()
        rank[self.order] = np.arange(len(options))
        dominates = rank[:, None] < rank[None, :]  # [j, i]: j comes first and is <= i in every coordinate
        for column in vectors.T:
            dominates &= column[:, None] <= column[None, :]
        never = np.ones((1, len(options)), dtype=bool)  # a row "index len(options)": dominated by nothing
        first_dominator = np.vstack([dominates, never]).argmax(axis=0)
        # (option index, first dominator) in front order, as Python ints: a search asks for thousands of fronts
        # of a few dozen options, where numpy's per-call cost dominates
        self.ranked = list(zip(self.order.tolist(), first_dominator[self.order].tolist()))
        self.fronts: dict[int, list[StageOption]] = {}  # by the number of options within the budget

    def front(self, max_cycles: int) -> list[StageOption]:
        """The front of a budget. Budgets that admit the same options share one list (a search asks for every
        stage's front at each of its levels, and most stages have few distinct ones), which callers never
        write to."""
        cut = bisect.bisect_right(self.cycles, max_cycles)
        if cut not in self.fronts:
            self.fronts[cut] = [self.options[i] for i, dominator in self.ranked if i < cut and dominator >= cut]
        return self.fronts[cut]


def pareto(options: list[StageOption], max_cycles: int) -> list[StageOption]:
    """Options within the cycle budget that no other such option beats or equals in every resource and in
    every output stream width (a narrower stream is cheaper to cut), in the order (res, out_widths, cycles)."""
    return ParetoTable(options).front(max_cycles)
