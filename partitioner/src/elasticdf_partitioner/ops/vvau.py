"""VVAU (FINN `Vector_Vector_Activate_Batch` v0.6, `VVAU_hls`/`VVAU_rtl` today): depthwise convolution.

v0.6 model (reference §3.1/3.2), with C channels, kernel K_h×K_w, P = PE:
- cycles = (C·K_h·K_w / P)·OFM_h·OFM_w
- WMEM = K_h·K_w·C/P, TMEM = C/P; weights live in the HLS kernel (BRAM when WMEM > 128, else LUTs).
- LUT = int(300 + 1.1·P·(mult + acc + thr + comp) + c2), c2 = P·W·ceil(WMEM/64) if WMEM <= 128
- DSP = P·ceil((W+A)/48) for resType dsp.
Folding: PE divides C. Its producer SWG's SIMD is tied to PE (a graph Tie), so all foldings stay in options.
Variants: resType lut|dsp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import FinnLayer, LaneStreams, ceil_div, clog2, divisors, res


def _vvau_bram(wmem: float, w: int, p: int) -> int:
    if wmem <= 128:
        return 0
    if w == 1:
        return ceil_div(wmem, 16384) * p
    if w == 2:
        return ceil_div(wmem, 8192) * p
    if w <= 4:
        return ceil_div(wmem, 4096) * ceil_div(w, 4) * p
    if w <= 9:
        return ceil_div(wmem, 2048) * ceil_div(w, 8) * p
    if w <= 18 or wmem > 512:
        return ceil_div(wmem, 1024) * ceil_div(w, 16) * p
    return ceil_div(wmem, 512) * ceil_div(w, 32) * p


@dataclass(eq=False)
class VVAU(LaneStreams, FinnLayer):
    name: str
    channels: int
    kernel: int = 3
    ofm: int = 1
    wbits: int = 4
    ibits: int = 4
    obits: int = 4
    activation: bool = True
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "VVAU"
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)
    variant_attrs: ClassVar[tuple[str, ...]] = ("resType",)
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {"resType": ("lut", "dsp", "auto")}
    prune_across_foldings: ClassVar[bool] = False

    def foldings(self) -> list[dict[str, int]]:
        return [{"PE": p} for p in divisors(self.channels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{"resType": "lut"}, {"resType": "dsp"}]

    def cycles(self, folding: dict[str, int]) -> int:
        # (C·K·K/P)·OFM²
        return self.channels * self.kernel * self.kernel // folding["PE"] * self.ofm * self.ofm

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        p, w, a = folding["PE"], self.wbits, self.ibits
        dsp_mult = variant.get("resType") == "dsp"
        wmem = self.kernel * self.kernel * self.channels / p
        c2 = p * w * ceil_div(wmem, 64) if wmem <= 128 else 0
        mult = 0 if dsp_mult else (2 * ceil_div(w + a, 6) - 1) * (w + a)
        acc = w + a + clog2(self.kernel * self.kernel)
        thr = comp = 0
        if self.activation:
            levels = 2 ** self.obits - 1
            thr = levels * acc * ceil_div(self.channels / p, 64)
            comp = levels * acc
        lut = int(300 + 1.1 * p * (mult + acc + thr + comp) + c2)
        dsp = p * ceil_div(w + a, 48) if dsp_mult else 0
        return res(lut=lut, bram18=_vvau_bram(wmem, w, p), dsp=dsp)

    @property
    def out_bits_per_frame(self) -> int:
        return self.ofm * self.ofm * self.channels * self.obits

    def describe(self) -> str:
        return f"dw{self.kernel}x{self.kernel} C{self.channels} @{self.ofm} W{self.wbits}A{self.ibits}"
