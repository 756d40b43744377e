"""Pool (FINN `Pool_Batch` v0.6, `Pool_hls` today) and StreamingMaxPool (`StreamingMaxPool_Batch`/`_hls`).

Pool: consumes SWG windows (its SWG's SIMD is tied to PE). cycles = (C·K·K/P)·OutImgDim² (reference §3.1).
FINN v0.6 estimates 0 LUT; we use LUT = 50 + P·acc, acc = A for max pooling and A + ceil(log2 K²) for
average/accumulate pooling (one comparator or adder bit per accumulator bit and lane). Variants: one.

StreamingMaxPool: the v0.6 HLS block takes all channels of one pixel per cycle and has no folding.
cycles = IFM² (our reading of the HLS loop; FINN's own formula differs slightly); LUT = 50 + C·A. It is
used by CNV-style networks; ResNet-50 and MobileNetV1 use SWG + Pool instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import SMALL_OP_LUT, FinnLayer, LaneStreams, clog2, divisors, res


@dataclass(eq=False)
class Pool(LaneStreams, FinnLayer):
    name: str
    channels: int
    kernel: int
    ofm: int = 1
    ibits: int = 4
    obits: int = 0  # 0: same as ibits (max pool) or ibits + log2(K²) (accumulating pools)
    function: str = "MaxPool"
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "Pool"
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)
    prune_across_foldings: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.obits == 0:
            self.obits = self.acc_bits()

    def acc_bits(self) -> int:
        grow = 0 if self.function == "MaxPool" else clog2(self.kernel * self.kernel)
        return self.ibits + grow

    def foldings(self) -> list[dict[str, int]]:
        return [{"PE": p} for p in divisors(self.channels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{}]

    def cycles(self, folding: dict[str, int]) -> int:
        return self.channels * self.kernel * self.kernel // folding["PE"] * self.ofm * self.ofm

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=SMALL_OP_LUT + folding["PE"] * self.acc_bits())

    @property
    def out_bits_per_frame(self) -> int:
        return self.ofm * self.ofm * self.channels * self.obits

    def describe(self) -> str:
        return f"{self.function} k{self.kernel} C{self.channels} ->{self.ofm}"


@dataclass(eq=False)
class StreamingMaxPool(FinnLayer):
    name: str
    channels: int
    ifm: int
    pool: int = 2
    ibits: int = 1
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "StreamingMaxPool"

    @property
    def ofm(self) -> int:
        return self.ifm // self.pool

    def foldings(self) -> list[dict[str, int]]:
        return [{}]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{}]

    def cycles(self, folding: dict[str, int]) -> int:
        return self.ifm * self.ifm

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=SMALL_OP_LUT + self.channels * self.ibits)

    def in_width(self, folding: dict[str, int]) -> int:
        return self.channels * self.ibits

    def out_width(self, folding: dict[str, int]) -> int:
        return self.channels * self.ibits

    @property
    def out_bits_per_frame(self) -> int:
        return self.ofm * self.ofm * self.channels * self.ibits

    def describe(self) -> str:
        return f"{self.ifm}->{self.ofm} C{self.channels}"
