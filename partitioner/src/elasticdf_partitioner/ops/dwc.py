"""StreamingDataWidthConverter (FINN `StreamingDataWidthConverter_Batch` v0.6, `_hls`/`_rtl` today).

v0.6 LUT estimate: with intw = lcm(in, out), LUT = |ceil(log2(in/intw))| + intw (if in != intw)
+ |ceil(log2(intw/out))| + out (if intw != out) — a shift-register implementation. No BRAM/DSP.
Cycles: FINN defines none; we use the words per frame on the narrower side, ceil(bits/min(in, out)).
No folding; impl_style hls|rtl cost the same here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from .base import FinnLayer, ceil_div, res


def dwc_lut(inw: int, outw: int) -> int:
    intw = inw * outw // math.gcd(inw, outw)
    lut = 0
    if inw != intw:
        lut += abs(math.ceil(math.log2(inw / intw))) + intw
    if intw != outw:
        lut += abs(math.ceil(math.log2(intw / outw))) + outw
    return lut


@dataclass(eq=False)
class StreamingDataWidthConverter(FinnLayer):
    name: str
    in_width_bits: int
    out_bits: int  # output stream width in bits
    bits_per_frame: int = 0
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "StreamingDataWidthConverter"
    variant_attrs: ClassVar[tuple[str, ...]] = ("impl_style",)
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {"impl_style": ("hls", "rtl", "vivado")}

    def foldings(self) -> list[dict[str, int]]:
        return [{}]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{"impl_style": "hls"}]

    def cycles(self, folding: dict[str, int]) -> int:
        return ceil_div(self.bits_per_frame, min(self.in_width_bits, self.out_bits))

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=dwc_lut(self.in_width_bits, self.out_bits))

    def in_width(self, folding: dict[str, int]) -> int:
        return self.in_width_bits

    def out_width(self, folding: dict[str, int]) -> int:
        return self.out_bits

    @property
    def out_bits_per_frame(self) -> int:
        return self.bits_per_frame

    def describe(self) -> str:
        return f"{self.in_width_bits}b->{self.out_bits}b"
