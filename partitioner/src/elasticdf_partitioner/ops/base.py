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
from functools import cache
from typing import ClassVar

from ..errors import InputError
from ..graph import Layer
from ..options import Option
from ..resources import Resources

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
    return math.ceil(a / b)


def clog2(x: float) -> int:
    """ceil(log2(x)) as FINN computes it (math.ceil(math.log(x, 2))); 0 for x <= 1."""
    return 0 if x <= 1 else math.ceil(math.log2(x))


def bram18_width_depth(depth: float, width: int) -> int:
    """RAMB18 count for a memory of `depth` words of `width` bits (FINN MVAU/FIFO rule, SDP RAMB18 shapes)."""
    if width == 1:
        return ceil_div(depth, 16384)
    if width == 2:
        return ceil_div(depth, 8192)
    if width <= 4:
        return ceil_div(depth, 4096) * ceil_div(width, 4)
    if width <= 9:
        return ceil_div(depth, 2048) * ceil_div(width, 9)
    if width <= 18 or depth > 512:
        return ceil_div(depth, 1024) * ceil_div(width, 18)
    return ceil_div(depth, 512) * ceil_div(width, 36)


def ff_from_lut(lut: float) -> float:
    """Our FF estimate (FINN has none): FF = LUT; see the module docstring."""
    return lut


def res(lut: float, bram18: float = 0, uram: float = 0, dsp: float = 0) -> Resources:
    lut = int(lut)
    return Resources(lut=lut, ff=ff_from_lut(lut), bram18=int(bram18), uram=int(uram), dsp=int(dsp))


def _dominates(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b))


class FinnLayer(Layer):
    """Common behaviour of the op classes (each op module defines a dataclass subclass).

    Subclasses set `op` (our canonical name), `folding_attrs`, `variant_attrs`, `variant_values` (every value
    accepted for each variant attribute, including FINN aliases such as "auto") and implement the abstract
    methods of Layer. `cost_settings` lists settings keys, other than folding/variant, that change costs
    (e.g. a FIFO's depth); they key the options cache.
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
        per_folding: list[Option] = []
        for folding in self.foldings():
            kept: list[Option] = []
            for variant in self.variants(folding):
                opt = self.option(folding, variant)
                if not any(_dominates(k.res, opt.res) for k in kept):
                    kept = [k for k in kept if not _dominates(opt.res, k.res)] + [opt]
            per_folding.extend(kept)
        if not self.prune_across_foldings:
            return per_folding
        front: list[Option] = []
        keyed = sorted(per_folding, key=lambda o: (o.cycles, o.res, o.out_width))
        vectors: list[tuple] = []
        for opt in keyed:
            vec = (opt.cycles, *opt.res, opt.out_width)
            if not any(_dominates(v, vec) for v in vectors):
                front.append(opt)
                vectors.append(vec)
        return front

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
