"""Shared pieces of the FINN cost models: divisor enumeration, FINN's RAMB18 width/depth rule, option caching
and pruning, settings validation.

Conventions used by every op module:
- Formulas are FINN v0.6's `get_exp_cycles` / `*_estimation` (reference elasticdf-facts.md §3); where an op
  deviates the module docstring says so.
- FF: FINN v0.6 has no FF estimate and the Elastic-DF ILP sets the FF requirement to 0. We estimate
  FF = LUT (`ff_from_lut`). Alveo parts have 2 FFs per LUT and the default FF limit is 0.5 against LUT 0.7,
  so FF never binds before LUT does, as in the original partitioner, yet the number is not an absurd 0.
- Where FINN estimates 0 LUT (AddStreams, DuplicateStreams, DownSampler, FMPadding, Pool, LabelSelect,
  StreamingMaxPool) we use a small documented estimate: a control constant plus about one LUT per datapath bit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InputError
from ..finn_node import DATAFLOW_DOMAIN, DataType, FinnNode
from ..graph import Layer
from ..options import Option
from ..resources import Resources

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering

# node attributes that carry a layer's folding, implementation variant or FIFO depth
SETTINGS_ATTRS = ("PE", "SIMD", "MMV", "ram_style", "mem_mode", "resType", "impl_style", "depth")

_OPTIONS_CACHE: dict[tuple, list[Option]] = {}

# Control-logic constant for ops that FINN v0.6 estimates at 0 LUT.
SMALL_OP_LUT = 50


@cache
def divisors(n: int) -> tuple[int, ...]:
    """All positive divisors of n, ascending (SetFolding walks these)."""
    if n < 1:
        raise ValueError(f"divisors of {n}")
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return tuple(sorted(set(small + [n // d for d in small])))


def ceil_div(a: float, b: float) -> int:
    """ceil(a / b); elementwise when a or b is a numpy array (the MVAU costs all its foldings at once)."""
    quotient = a / b
    if isinstance(quotient, float):
        return math.ceil(quotient)
    import numpy as np

    return np.ceil(quotient)


def where(condition: bool, value: float, otherwise: float) -> float:
    """`value if condition else otherwise`; elementwise when the condition is a numpy array."""
    if isinstance(condition, bool):
        return value if condition else otherwise
    import numpy as np

    return np.where(condition, value, otherwise)


def clog2(x: float) -> int:
    """ceil(log2(x)) as FINN computes it (math.ceil(math.log(x, 2))); 0 for x <= 1."""
    return 0 if x <= 1 else math.ceil(math.log2(x))


# The SDP RAMB18 shapes FINN's rule picks from, narrowest first: (word bits, words); a memory takes the first
# whose rule holds (see bram18_width_depth), else the widest, in as many columns as its words need.
RAMB18_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024))
RAMB18_WIDEST = (36, 512)


def bram18_width_depth(depth: float, width: int) -> int:
    """RAMB18 count for a memory of `depth` words of `width` bits (FINN MVAU/FIFO rule, SDP RAMB18 shapes);
    elementwise when depth or width is a numpy array."""
    # one rule per shape: 1- and 2-bit words exactly, wider ones up to the shape's width; words of 19-36 bits
    # deeper than 512 also take the 18-bit shape
    fits = [width == 1, width == 2, width <= 4, width <= 9, (width <= 18) | (depth > 512)]
    if isinstance(fits[-1], bool):
        word, words = next((shape for shape, fit in zip(RAMB18_SHAPES, fits) if fit), RAMB18_WIDEST)
    else:
        import numpy as np

        word = np.select(fits, [w for w, _ in RAMB18_SHAPES], RAMB18_WIDEST[0])
        words = np.select(fits, [d for _, d in RAMB18_SHAPES], RAMB18_WIDEST[1])
    return ceil_div(depth, words) * ceil_div(width, word)


def ff_from_lut(lut: float) -> float:
    """Our FF estimate (FINN has none): FF = LUT; see the module docstring."""
    return lut


def res(lut: float, bram18: float = 0, uram: float = 0, dsp: float = 0) -> Resources:
    lut = int(lut)
    # positional: a NamedTuple called with keywords takes 4x as long, and a cold plan makes ~10^4 of these
    return Resources(lut, ff_from_lut(lut), int(bram18), int(uram), int(dsp))


def sorted_front(rows: np.ndarray, block: int = 128) -> np.ndarray:
    """Positions of the rows (sorted lexicographically) that no earlier row is <= in every column: the Pareto
    front, the first of equal rows kept (a later row can only be <= an earlier one if they are equal). What
    keeping a front row by row keeps, checked a block at a time against the front so far and the block
    itself (a row beaten by a dropped row is beaten by a kept one). The first column needs no test: an
    earlier row is <= in it by the sort."""
    import numpy as np

    if len(rows) <= 1:  # most foldings of an op whose foldings are pruned apart have one variant
        return np.arange(len(rows))
    rows = rows[:, 1:]
    earlier = _earlier(block)
    front, kept = rows[:0], [np.zeros(0, dtype=int)]
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        beaten = _all_le(front, chunk).any(axis=0)
        beaten |= (_all_le(chunk, chunk) & earlier[:len(chunk), :len(chunk)]).any(axis=0)
        fresh = np.flatnonzero(~beaten)
        kept.append(start + fresh)
        front = np.vstack([front, chunk[fresh]])
    return np.concatenate(kept)


@cache
def _earlier(block: int) -> np.ndarray:
    """[j, i]: j < i (row j comes before row i)."""
    import numpy as np

    return np.triu(np.ones((block, block), dtype=bool), k=1)


def _all_le(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[i, j]: row a[i] <= row b[j] in every column; column by column (a reduction over a short last axis is
    several times slower)."""
    import numpy as np

    le = np.ones((len(a), len(b)), dtype=bool)
    for column in range(a.shape[1]):
        le &= a[:, column, None] <= b[None, :, column]
    return le


@dataclass(frozen=True)
class Tensor:
    """A stream tensor as FINN declares it: its normal (NHWC) shape and its datatype."""

    shape: tuple[int, ...]
    dtype: DataType


@dataclass
class FinnNodeSpec:
    """What `to_finn` gives: a FINN dataflow node without its tensor names. `params` are the initializers
    that follow the stream inputs, in FINN's input order (weights, thresholds, channelwise parameters)."""

    op_type: str
    attrs: dict[str, Any]
    outputs: list[Tensor]
    params: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def domain(self) -> str:
        for suffix in ("hls", "rtl"):
            if self.op_type.endswith("_" + suffix):
                return f"{DATAFLOW_DOMAIN}.{suffix}"
        return DATAFLOW_DOMAIN


class FinnLayer(Layer):
    """Common behaviour of the op classes (each op module defines a dataclass subclass).

    Subclasses set `op` (our canonical name), `finn_op_types` (every FINN op type of the op, v0.6 first, the
    one `to_finn` writes last), `folding_attrs`, `variant_attrs`, `variant_values` (every value accepted for
    each variant attribute, including FINN aliases such as "auto") and implement the abstract methods of
    Layer. `cost_settings` lists settings keys, other than folding/variant, that change costs (e.g. a FIFO's
    depth); they key the options cache.

    Each op module also holds the op's FINN side: `from_finn` (import a node), `to_finn` (export the layer with
    seeded parameters) and `lower` (standard ONNX computing FINN's semantics of a node, see lowering.py).
    """

    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {}
    cost_settings: ClassVar[tuple[str, ...]] = ()
    # False for layers whose foldings are tied to a neighbour's (depthwise SWG, VVAU, Pool): every folding must
    # stay available, so options are pruned only among the variants of one folding.
    prune_across_foldings: ClassVar[bool] = True

    # --- options -------------------------------------------------------------------------------------------
    def options(self) -> list[Option]:
        """Legal (folding, variant) options, without duplicates and dominated ones.

        Cached by shape: layers of the same class with equal shape fields and cost settings (e.g. the repeated
        bottlenecks of ResNet-50) share one list; Options are immutable.
        """
        key = self._shape_key()
        found = _OPTIONS_CACHE.get(key)
        if found is None:
            found = _OPTIONS_CACHE[key] = self._build_options()
        return found

    def _shape_key(self) -> tuple:
        shape = tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                      if f.name not in ("name", "settings"))
        return (type(self), shape, tuple((k, str(self.settings.get(k))) for k in self.cost_settings))

    def _build_options(self) -> list[Option]:
        """Pareto-pruned options: among the variants of each folding by resources, or, unless the folding is
        tied to a neighbour's, across foldings by cycles, resources and output width, in that sort order.
        Costs are compared as one array (a ResNet-50 has ~10^4 candidates); Options are made for the kept."""
        import numpy as np

        table, groups, options = self._candidate_costs()
        if not len(table):
            return []
        if self.prune_across_foldings:  # the front across foldings is also the front of each folding's front
            runs = [np.arange(len(table))]
        else:
            runs = np.split(np.arange(len(table)), np.flatnonzero(np.diff(groups)) + 1)
        kept = []
        for run in runs:
            order = run[np.lexsort(table[run].T[::-1])]  # stable, like sorted() by the cost tuple
            kept.extend(order[sorted_front(table[order])])
        if not self.prune_across_foldings:
            kept.sort()  # the variants of a folding stay in their order
        return options(kept)

    def _candidate_costs(self) -> tuple[np.ndarray, list[int], Callable[[list[int]], list[Option]]]:
        """Every (folding, variant) candidate, foldings in order and each one's variants in order: their costs as
        rows (cycles, LUT, FF, BRAM18, URAM, DSP, output width), each one's folding index, and the Options of
        candidates by their rows. One candidate at a time; the MVAU (~90 % of a ResNet-50's) costs its candidates
        a variant at a time over all foldings."""
        import numpy as np

        candidates, costs, groups = [], [], []
        for group, folding in enumerate(self.foldings()):
            cycles, width = self.cycles(folding), self.out_width(folding)
            for variant in self.variants(folding):
                res = self.resources(folding, variant)
                candidates.append((folding, variant, cycles, res, width))
                costs.append((cycles, *res, width))
                groups.append(group)
        return (np.array(costs, dtype=float).reshape(-1, 7), groups,
                lambda kept: [Option.of(*candidates[i]) for i in kept])

    # --- settings ------------------------------------------------------------------------------------------
    def extra_settings(self) -> dict[str, int | str]:
        """Settings other than folding/variant that a folding-config JSON should carry (e.g. FIFO depth)."""
        return {}

    def check_settings(self) -> None:
        """Raise InputError (naming this node) for a variant value FINN would not accept."""
        for attr, allowed in self.variant_values.items():
            if attr in self.settings and str(self.settings[attr]) not in allowed:
                raise InputError(f"{self.name} ({self.op}).{attr}", f"illegal value {self.settings[attr]!r}",
                                 list(allowed))
        for attr in self.folding_attrs:
            if attr in self.settings:
                value = self.settings[attr]
                if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
                    raise InputError(f"{self.name} ({self.op}).{attr}", f"expected a positive integer, got {value!r}")

    def in_width(self, folding: dict[str, int]) -> int:
        """Input stream width in bits per cycle (used to size inserted width converters)."""
        raise NotImplementedError

    def published_folding(self) -> dict[str, int]:
        return dict(self.current().folding)

    def describe(self) -> str:
        """One-line shape summary for tables."""
        return self.op

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> FinnLayer:
        """The layer of a FINN dataflow node (shapes, datatypes, folding/variant settings)."""
        raise NotImplementedError

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        """This layer as a FINN node fed by `inputs` (the producers' tensors), parameters drawn from rng."""
        raise NotImplementedError

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        """Standard ONNX nodes computing FINN's semantics of `node` on `inputs`; returns the output tensors."""
        raise NotImplementedError

    def finn_input(self) -> Tensor | None:
        """The stream this layer takes as the first layer of a model (None: it passes any stream through)."""
        return None

    @property
    def export_op_type(self) -> str:
        return self.finn_op_types[-1]

    def finn_attrs(self, **attrs: Any) -> dict[str, Any]:
        """Node attributes: the op's own, then its folding (current) and the settings FINN knows by name."""
        folding = dict(self.current().folding)
        settings = {a: v for a, v in self.settings.items() if a in SETTINGS_ATTRS}
        return {**attrs, "backend": "fpgadataflow", **folding, **settings}


class LaneStreams:
    """Ops whose input and output streams carry one value per lane per cycle, the lanes being the folding
    attribute named by `lanes` (PE or SIMD); `ibits`/`obits` are the bits of one input/output value."""

    lanes: ClassVar[str] = "PE"

    def in_width(self, folding: dict[str, int]) -> int:
        return folding[self.lanes] * self.ibits

    def out_width(self, folding: dict[str, int]) -> int:
        return folding[self.lanes] * self.obits


class MovesValues(LaneStreams):
    """Lane-stream ops that move values without changing them (padding, sampling, windows, fan-out)."""

    @property
    def obits(self) -> int:
        return self.ibits


def default_vectors(n_vec: int) -> tuple[int, ...]:
    """FINN's numInputVectors for `n_vec` vectors when a model builder gives none: (1,) for one vector,
    (1, H, H) for a square image of H·H pixels, else (1, n_vec)."""
    if n_vec == 1:
        return (1,)
    side = math.isqrt(n_vec)
    return (1, side, side) if side * side == n_vec else (1, n_vec)


def spread_thresholds(rng: np.random.Generator, lo: Any, hi: Any, channels: int, steps: int) -> np.ndarray:
    """(channels, steps) integer thresholds, ascending per channel, spread evenly over [lo, hi] (scalars or one
    value per channel) with a random jitter of up to half a step, so that every output level is reachable and
    the levels differ between channels."""
    import numpy as np

    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (channels,))[:, None]
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (channels,))[:, None]
    step = (hi - lo) / (steps + 1)
    levels = lo + step * np.arange(1, steps + 1) + step * rng.uniform(-0.5, 0.5, (channels, steps))
    return np.sort(np.ceil(levels), axis=1).astype(np.float32)


def uniform_moments(dtype: DataType) -> tuple[float, float]:
    """Mean and variance of a value drawn uniformly from the integers of `dtype` (BIPOLAR: ±1)."""
    if dtype.bipolar:
        return 0.0, 1.0
    width = dtype.max - dtype.min + 1
    return (dtype.min + dtype.max) / 2, (width * width - 1) / 12


def draw(rng: np.random.Generator, dtype: DataType, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform random values of an integer datatype as float32 (BIPOLAR: ±1)."""
    import numpy as np

    if dtype.bipolar:
        return (2 * rng.integers(0, 2, shape, dtype=np.int8) - 1).astype(np.float32)
    return rng.integers(int(dtype.min), int(dtype.max) + 1, shape, dtype=np.int64).astype(np.float32)


def input_type(tensor: Tensor, bits: int) -> DataType:
    """The datatype a layer of `bits`-bit inputs declares for its producer's tensor: the producer's type when
    its width matches, else the integer type of that width with the producer's signedness."""
    return tensor.dtype if tensor.dtype.bits == bits else DataType.of(bits, tensor.dtype.signed)


def lanes_out(ctx: Lowering, source: str, target: str) -> str:
    """`target` carries `source`'s values in the same order: keep its depthwise window layout."""
    if source in ctx.interleave:
        ctx.interleave[target] = ctx.interleave[source]
    return target
