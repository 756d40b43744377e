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

FINN semantics (im2col, no padding: FMPadding does that): output pixel (oy, ox) holds the input pixels
(oy·stride + kh·dilation, ox·stride + kw·dilation) for every kh, kw of the window, in (kh, kw, c) order. A
depthwise SWG streams its SIMD lanes channel-interleaved, (c / SIMD, kh, kw, SIMD) order, which is how FINN's
VVAU (and Pool) read it; the lowering keeps that order, so a tensor cut after the SWG carries exactly what the
hardware stream carries, and records the lanes for the consumer (Lowering.interleave).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..finn_node import DataType, FinnNode
from .base import SETTINGS_ATTRS, FinnLayer, FinnNodeSpec, MovesValues, Tensor, ceil_div, divisors, input_type, res

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering


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
    ofm: int = 0  # 0: (ifm - dilation·(kernel - 1) - 1) // stride + 1
    settings: dict = field(default_factory=dict)
    dilation: int = 1

    op: ClassVar[str] = "ConvolutionInputGenerator"
    finn_op_types: ClassVar[tuple[str, ...]] = (
        "ConvolutionInputGenerator", "ConvolutionInputGenerator_hls", "ConvolutionInputGenerator_rtl")
    folding_attrs: ClassVar[tuple[str, ...]] = ("SIMD",)
    variant_attrs: ClassVar[tuple[str, ...]] = ("ram_style",)
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {"ram_style": ("distributed", "block", "ultra", "auto")}

    def __post_init__(self) -> None:
        if self.ofm == 0:
            self.ofm = (self.ifm - self.dilation * (self.kernel - 1) - 1) // self.stride + 1

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

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> ConvolutionInputGenerator:
        return cls(node.name, channels=node.int("IFMChannels"), ifm=node.int("IFMDim"),
                   kernel=node.int("ConvKernelDim"), stride=node.int("Stride", 1), dilation=node.int("Dilation", 1),
                   ibits=node.bits("inputDataType"), depthwise=bool(node.int("depthwise", 0)),
                   ofm=node.int("OFMDim", 0), settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((1, self.ifm, self.ifm, self.channels), DataType.of(self.ibits))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        attrs = self.finn_attrs(
            ConvKernelDim=[self.kernel] * 2, IFMChannels=self.channels, IFMDim=[self.ifm] * 2,
            OFMDim=[self.ofm] * 2, Stride=[self.stride] * 2, Dilation=[self.dilation] * 2, inputDataType=idt.name,
            outputDataType=idt.name, depthwise=int(self.depthwise))
        shape = (1, self.ofm, self.ofm, self.kernel * self.kernel * self.channels)
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor(shape, idt)])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        channels, k, ifm = node.int("IFMChannels"), node.int("ConvKernelDim"), node.int("IFMDim")
        x = ctx.reshape(inputs[0], (1, ifm, ifm, channels))
        ofm = node.int("OFMDim")
        out = sliding_windows(ctx, x, k, node.int("Stride", 1), node.int("Dilation", 1), ofm)
        lanes = node.int("SIMD", channels)
        if node.int("depthwise", 0) and lanes != channels:
            out = ctx.reshape(out, (1, ofm, ofm, k * k, channels // lanes, lanes))
            out = ctx.op("Transpose", [out], perm=[0, 1, 2, 4, 3, 5])
            out = ctx.reshape(out, (1, ofm, ofm, k * k * channels))
            ctx.interleave[out] = lanes
        return [out]


def sliding_windows(ctx: Lowering, x: str, kernel: int, stride: int, dilation: int, ofm: int) -> str:
    """im2col of an NHWC image without padding: (1, OFM, OFM, K·K·C) in (kh, kw, c) order, one strided Slice
    per window position, concatenated."""
    if kernel == 1 and stride == 1:
        return x
    span = (ofm - 1) * stride + 1
    parts = []
    for kh in range(kernel):
        for kw in range(kernel):
            start = [kh * dilation, kw * dilation]
            parts.append(ctx.op("Slice", [x, ctx.ints(start, "starts"), ctx.ints([s + span for s in start], "ends"),
                                          ctx.ints([1, 2], "axes"), ctx.ints([stride, stride], "steps")]))
    return parts[0] if len(parts) == 1 else ctx.op("Concat", parts, axis=3)


def window_values(ctx: Lowering, windows: str, dim: int, window: int, channels: int) -> str:
    """The (1, D, D, K·K·C) sliding-window tensor as (1, D, D, K·K, C), undoing a depthwise lane interleave."""
    lanes = ctx.interleave.get(windows, channels)
    if lanes == channels:
        return ctx.reshape(windows, (1, dim, dim, window, channels))
    split = ctx.reshape(windows, (1, dim, dim, channels // lanes, window, lanes))
    return ctx.reshape(ctx.op("Transpose", [split], perm=[0, 1, 2, 4, 3, 5]), (1, dim, dim, window, channels))
