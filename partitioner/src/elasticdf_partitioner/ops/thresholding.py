"""Thresholding (FINN `Thresholding_Batch` v0.6, `Thresholding_hls`/`_rtl` today): multi-threshold activation.

v0.6 model, with P = PE, A = input bits, TMEM = C/P, N_vec pixels:
- cycles = N_vec·C/P
- LUT = A·P (comparators) + P·A·ceil(TMEM/64) when ram_style distributed and TMEM > 1
- BRAM18 = ceil(A·P/16)·ceil(TMEM/1024) when ram_style block and TMEM > 1
Folding: PE divides C. Variants: ram_style distributed (FINN default) | block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import FinnLayer, LaneStreams, ceil_div, divisors, res


def threshold_memory_cost(p: int, a: int, tmem: float, style: str):
    """Shared by Thresholding and ChannelwiseOp (same v0.6 estimate)."""
    lut = a * p
    bram = 0
    if tmem > 1:
        if style == "distributed":
            lut += p * a * ceil_div(tmem, 64)
        elif style in ("block", "auto"):
            bram = ceil_div(a * p, 16) * ceil_div(tmem, 1024)
    return res(lut=lut, bram18=bram)


@dataclass(eq=False)
class Thresholding(LaneStreams, FinnLayer):
    name: str
    channels: int
    n_vec: int = 1
    ibits: int = 4
    obits: int = 2
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "Thresholding"
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)
    variant_attrs: ClassVar[tuple[str, ...]] = ("ram_style",)
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {"ram_style": ("distributed", "block", "auto")}

    def foldings(self) -> list[dict[str, int]]:
        return [{"PE": p} for p in divisors(self.channels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{"ram_style": "distributed"}, {"ram_style": "block"}]

    def cycles(self, folding: dict[str, int]) -> int:
        return self.n_vec * (self.channels // folding["PE"])

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        p = folding["PE"]
        return threshold_memory_cost(p, self.ibits, self.channels / p, variant.get("ram_style", "distributed"))

    @property
    def out_bits_per_frame(self) -> int:
        return self.n_vec * self.channels * self.obits

    def describe(self) -> str:
        return f"C{self.channels} x{self.n_vec} {self.ibits}->{self.obits}b"
