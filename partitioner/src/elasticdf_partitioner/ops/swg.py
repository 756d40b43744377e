"""ConvolutionInputGenerator (sliding-window generator, SWG): FINN v0.6 HLS `ConvolutionInputGenerator`,
today's `ConvolutionInputGenerator_rtl`/`_hls`. Square images and kernels, dilation 1.

v0.6 model (reference §3), Q = SIMD, A = input bits, C channels:
- cycles = IFM·K·(C/Q) + OFM·max(OFM·K·K·(C/Q), stride·IFM·(C/Q))
- block (or auto): BRAM18 = (K+stride)·ceil(Q·A/width)·ceil(IFM·C/Q/depth), with depth = IFM·C/Q and
  width 36/18/9/4/2/1 for depth <= 512/1024/2048/4096/8192/more; LUT = 300
- distributed: LUT = 300 + (K+stride)·Q·A·ceil(IFM·C/Q/64)
- ultra: URAM = (K+stride)·ceil(Q·A/64)·ceil(IFM·C/Q/4096); LUT = 300
Folding: SIMD divides C. A depthwise SWG (feeding a VVAU or Pool) has its SIMD tied to the consumer's PE.
Variants: ram_style distributed (FINN v0.6 default) | block | ultra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import FinnLayer, MovesValues, ceil_div, divisors, res


def _ram_width(depth: float) -> int:
    for limit, width in ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2)):
        if depth <= limit:
            return width
    return 1


@dataclass(eq=False)
class ConvolutionInputGenerator(MovesValues, FinnLayer):
    lanes: ClassVar[str] = "SIMD"
    name: str
    channels: int
    ifm: int
    kernel: int = 3
    stride: int = 1
    ibits: int = 2
    depthwise: bool = False
    ofm: int = 0  # 0: (ifm - kernel) // stride + 1
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "ConvolutionInputGenerator"
    folding_attrs: ClassVar[tuple[str, ...]] = ("SIMD",)
    variant_attrs: ClassVar[tuple[str, ...]] = ("ram_style",)
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {"ram_style": ("distributed", "block", "ultra", "auto")}

    def __post_init__(self) -> None:
        if self.ofm == 0:
            self.ofm = (self.ifm - self.kernel) // self.stride + 1

    @property
    def prune_across_foldings(self) -> bool:  # type: ignore[override]
        return not self.depthwise

    def foldings(self) -> list[dict[str, int]]:
        return [{"SIMD": q} for q in divisors(self.channels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{"ram_style": s} for s in ("distributed", "block", "ultra")]

    def cycles(self, folding: dict[str, int]) -> int:
        cf = self.channels // folding["SIMD"]
        k, ifm, ofm = self.kernel, self.ifm, self.ofm
        return ifm * k * cf + ofm * max(ofm * k * k * cf, self.stride * ifm * cf)

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        q, a, k, s = folding["SIMD"], self.ibits, self.kernel, self.stride
        style = variant.get("ram_style", "distributed")
        words = self.ifm * self.channels / q
        if style == "distributed":
            return res(lut=300 + (k + s) * q * a * ceil_div(words, 64))
        if style == "ultra":
            return res(lut=300, uram=(k + s) * ceil_div(q * a, 64) * ceil_div(words, 4096))
        # FINN's last factor ceil(IFM·C/Q / depth) with depth = IFM·C/Q is always 1
        return res(lut=300, bram18=(k + s) * ceil_div(q * a, _ram_width(words)))

    @property
    def out_bits_per_frame(self) -> int:
        return self.ofm * self.ofm * self.kernel * self.kernel * self.channels * self.ibits

    def describe(self) -> str:
        dw = " dw" if self.depthwise else ""
        return f"k{self.kernel}s{self.stride} {self.ifm}->{self.ofm} C{self.channels}{dw}"
