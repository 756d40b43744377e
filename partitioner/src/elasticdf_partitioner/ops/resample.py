"""FMPadding and DownSampler (FINN `FMPadding_Batch`/`DownSampler` v0.6; `FMPadding_rtl`/`_hls`,
`DownSampler_hls` today): SIMD-parallel image reshaping ops without arithmetic.

- FMPadding: cycles = (C/Q)·OFM_h·OFM_w, OFM = IFM + total padding (reference §3.1).
- DownSampler: cycles = (C/Q)·IFM² (reads every input pixel, keeps every stride-th); OFM = (IFM-1)//stride + 1.
FINN v0.6 estimates 0 LUT; we use LUT = 50 + Q·A (one register/mux bit per lane bit, plus counters).
SIMD divides C. One variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import SMALL_OP_LUT, FinnLayer, MovesValues, divisors, res


@dataclass(eq=False)
class _SimdImageOp(MovesValues, FinnLayer):
    lanes: ClassVar[str] = "SIMD"
    name: str
    channels: int
    ifm: int
    ibits: int = 2
    settings: dict = field(default_factory=dict)

    folding_attrs: ClassVar[tuple[str, ...]] = ("SIMD",)

    @property
    def ofm(self) -> int:
        raise NotImplementedError

    def foldings(self) -> list[dict[str, int]]:
        return [{"SIMD": q} for q in divisors(self.channels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{}]

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=SMALL_OP_LUT + folding["SIMD"] * self.ibits)

    @property
    def out_bits_per_frame(self) -> int:
        return self.ofm * self.ofm * self.channels * self.ibits

    def describe(self) -> str:
        return f"{self.ifm}->{self.ofm} C{self.channels} {self.ibits}b"


@dataclass(eq=False)
class FMPadding(_SimdImageOp):
    padding: int = 2  # total over both sides of one dimension

    op: ClassVar[str] = "FMPadding"

    @property
    def ofm(self) -> int:
        return self.ifm + self.padding

    def cycles(self, folding: dict[str, int]) -> int:
        return (self.channels // folding["SIMD"]) * self.ofm * self.ofm


@dataclass(eq=False)
class DownSampler(_SimdImageOp):
    stride: int = 2

    op: ClassVar[str] = "DownSampler"

    @property
    def ofm(self) -> int:
        return (self.ifm - 1) // self.stride + 1

    def cycles(self, folding: dict[str, int]) -> int:
        return (self.channels // folding["SIMD"]) * self.ifm * self.ifm
