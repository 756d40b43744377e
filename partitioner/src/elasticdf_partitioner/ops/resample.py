"""FMPadding, DownSampler and FMPadding_Pixel (FINN `FMPadding_Batch`/`DownSampler` v0.6; `FMPadding_rtl`/`_hls`,
`DownSampler_hls`, `FMPadding_Pixel`/`_hls` today): SIMD-parallel image reshaping ops without arithmetic.

- FMPadding: cycles = (C/Q)·OFM_h·OFM_w, OFM = IFM + total padding (reference §3.1).
- DownSampler: cycles = (C/Q)·IFM² (reads every input pixel, keeps every stride-th); OFM = (IFM-1)//stride + 1.
- FMPadding_Pixel: cycles = (C/Q)·OFM_h·OFM_w (FINN's `get_exp_cycles`), OFM = IFM + (IFM-1)·(stride-1).
FINN estimates 0 LUT; we use LUT = 50 + Q·A (one register/mux bit per lane bit, plus counters).
SIMD divides C. One variant.

FINN semantics: FMPadding pads the NHWC image with zeros, Padding = [top, left, bottom, right];
DownSampler keeps pixels (y·stride, x·stride), the 1×1 sliding window at that stride; FMPadding_Pixel puts
pixel (y, x) at (y·stride, x·stride) and zeros between (the input of a transposed convolution, FINN's
`InferPixelPaddingDeconv`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..errors import InputError
from ..finn_node import DataType, FinnNode
from .base import SETTINGS_ATTRS, SMALL_OP_LUT, FinnLayer, FinnNodeSpec, MovesValues, Tensor, divisors, input_type, res

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering


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

    def finn_input(self) -> Tensor:
        return Tensor((1, self.ifm, self.ifm, self.channels), DataType.of(self.ibits))

    def image_spec(self, inputs: list[Tensor], **attrs) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        attrs = self.finn_attrs(NumChannels=self.channels, inputDataType=idt.name, **attrs)
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((1, self.ofm, self.ofm, self.channels), idt)])


@dataclass(eq=False)
class FMPadding(_SimdImageOp):
    padding: int = 2  # total over both sides of one dimension
    pad_begin: int = -1  # top (= left) padding; -1: padding // 2

    op: ClassVar[str] = "FMPadding"
    finn_op_types: ClassVar[tuple[str, ...]] = ("FMPadding_Batch", "FMPadding", "FMPadding_rtl", "FMPadding_hls")

    def __post_init__(self) -> None:
        if self.pad_begin < 0:
            self.pad_begin = self.padding // 2

    @property
    def ofm(self) -> int:
        return self.ifm + self.padding

    def cycles(self, folding: dict[str, int]) -> int:
        return (self.channels // folding["SIMD"]) * self.ofm * self.ofm

    @staticmethod
    def pads(node: FinnNode) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) from Padding: [top, left, bottom, right] today; v0.6 also wrote [total]
        (split as evenly as possible, the extra pixel at the end) or [begin, end] (the same for H and W)."""
        pad = node.ints("Padding")
        if len(pad) == 4:
            return pad[0], pad[1], pad[2], pad[3]
        begin, end = (pad[0] // 2, pad[0] - pad[0] // 2) if len(pad) == 1 else (pad[0], pad[1])
        return begin, begin, end, end

    @classmethod
    def from_finn(cls, node: FinnNode) -> FMPadding:
        top, _left, bottom, _right = cls.pads(node)
        return cls(node.name, channels=node.int("NumChannels"), ifm=node.int("ImgDim"),
                   ibits=node.bits("inputDataType"), padding=top + bottom, pad_begin=top,
                   settings=node.settings(SETTINGS_ATTRS))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        end = self.padding - self.pad_begin
        return self.image_spec(inputs, ImgDim=[self.ifm] * 2, Padding=[self.pad_begin, self.pad_begin, end, end])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        ifm = node.int("ImgDim")
        x = ctx.reshape(inputs[0], (1, ifm, ifm, node.int("NumChannels")))
        return [pad_image(ctx, x, cls.pads(node))]


@dataclass(eq=False)
class DownSampler(_SimdImageOp):
    stride: int = 2

    op: ClassVar[str] = "DownSampler"
    finn_op_types: ClassVar[tuple[str, ...]] = ("DownSampler", "DownSampler_hls")

    @property
    def ofm(self) -> int:
        return (self.ifm - 1) // self.stride + 1

    def cycles(self, folding: dict[str, int]) -> int:
        return (self.channels // folding["SIMD"]) * self.ifm * self.ifm

    @classmethod
    def from_finn(cls, node: FinnNode) -> DownSampler:
        return cls(node.name, channels=node.int("NumChannels"), ifm=node.int("ImgDim"),
                   ibits=node.bits("inputDataType"), stride=node.int("Stride", 2),
                   settings=node.settings(SETTINGS_ATTRS))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        return self.image_spec(inputs, ImgDim=self.ifm, Stride=self.stride)

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        from .swg import sliding_windows

        ifm, stride = node.int("ImgDim"), node.int("Stride", 2)
        x = ctx.reshape(inputs[0], (1, ifm, ifm, node.int("NumChannels")))
        out = sliding_windows(ctx, x, 1, stride, 1, (ifm - 1) // stride + 1)
        return [out if out != x else ctx.op("Identity", [x])]


@dataclass(eq=False)
class FMPaddingPixel(_SimdImageOp):
    stride: int = 2

    op: ClassVar[str] = "FMPadding_Pixel"
    finn_op_types: ClassVar[tuple[str, ...]] = ("FMPadding_Pixel", "FMPadding_Pixel_hls")

    @property
    def ofm(self) -> int:
        return self.ifm + (self.ifm - 1) * (self.stride - 1)

    def cycles(self, folding: dict[str, int]) -> int:
        return (self.channels // folding["SIMD"]) * self.ofm * self.ofm

    @staticmethod
    def square_stride(node: FinnNode) -> int:
        stride = node.ints("Stride")
        if len(set(stride)) != 1 or stride[0] < 1:
            raise InputError(node.where("Stride"), f"stride {stride}: square strides >= 1 only (FINN's square "
                                                   "images)")
        return stride[0]

    @classmethod
    def from_finn(cls, node: FinnNode) -> FMPaddingPixel:
        return cls(node.name, channels=node.int("NumChannels"), ifm=node.int("ImgDim"),
                   ibits=node.bits("inputDataType"), stride=cls.square_stride(node),
                   settings=node.settings(SETTINGS_ATTRS))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        return self.image_spec(inputs, ImgDim=[self.ifm] * 2, Stride=[self.stride] * 2, numInputVectors=1)

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        """Each pixel followed by stride-1 zero pixels along H and W (Pad on new axes), the trailing ones cut."""
        ifm, s, c = node.int("ImgDim"), cls.square_stride(node), node.int("NumChannels")
        ofm = ifm + (ifm - 1) * (s - 1)
        x = ctx.reshape(inputs[0], (1, ifm, 1, ifm, 1, c))
        pads = [0, 0, 0, 0, 0, 0, 0, 0, s - 1, 0, s - 1, 0]
        spread = ctx.reshape(ctx.op("Pad", [x, ctx.ints(pads, "pads")], mode="constant"), (1, ifm * s, ifm * s, c))
        return [ctx.op("Slice", [spread, ctx.ints([0, 0], "starts"), ctx.ints([ofm, ofm], "ends"),
                                 ctx.ints([1, 2], "axes")])]


def pad_image(ctx: Lowering, x: str, pads: tuple[int, int, int, int]) -> str:
    """Zero padding of an NHWC image by (top, left, bottom, right)."""
    if not any(pads):
        return x
    top, left, bottom, right = pads
    return ctx.op("Pad", [x, ctx.ints([0, top, left, 0, 0, bottom, right, 0], "pads")], mode="constant")
