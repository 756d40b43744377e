"""Pool (FINN `Pool_Batch` v0.6, `Pool_hls` today) and StreamingMaxPool (`StreamingMaxPool_Batch`/`_hls`).

Pool: consumes SWG windows (its SWG's SIMD is tied to PE). cycles = (C·K·K/P)·OutImgDim² (reference §3.1).
FINN v0.6 estimates 0 LUT; we use LUT = 50 + P·acc, acc = A for max pooling and A + ceil(log2 K²) for
average/accumulate pooling (one comparator or adder bit per accumulator bit and lane). Variants: one.

StreamingMaxPool: the v0.6 HLS block takes all channels of one pixel per cycle and has no folding.
cycles = IFM² (our reading of the HLS loop; FINN's own formula differs slightly); LUT = 50 + C·A. It is
used by CNV-style networks; ResNet-50 and MobileNetV1 use SWG + Pool instead.

FINN semantics. Pool reads its SWG's windows (1, D, D, K·K·C): MaxPool takes the window maximum;
QuantAvgPool sums the window and shifts right by max(0, bitlength((2**ibits - 1)·K²) - obits) bits (floor).
StreamingMaxPool: max over non-overlapping PoolDim×PoolDim windows of the NHWC image (floor mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..errors import InputError
from ..finn_node import DataType, FinnNode
from .base import (
    SETTINGS_ATTRS,
    SMALL_OP_LUT,
    FinnLayer,
    FinnNodeSpec,
    LaneStreams,
    Tensor,
    clog2,
    divisors,
    input_type,
    res,
)

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering

FUNCTIONS = ("MaxPool", "QuantAvgPool")


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
    finn_op_types: ClassVar[tuple[str, ...]] = ("Pool_Batch", "Pool", "Pool_hls")
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

    # --- FINN ONNX (v0.6: dataType, OutImgDim; today: InputDataType/OutputDataType, OutImgDims) -------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> Pool:
        function = str(node.get("Function", "MaxPool"))
        if function not in FUNCTIONS:
            raise InputError(node.where("Function"), f"unsupported pool function {function!r}", list(FUNCTIONS))
        idt = node.first(("InputDataType", "inputDataType", "dataType"))
        odt = node.first(("OutputDataType", "outputDataType"), idt)
        return cls(node.name, channels=node.int("Channels"), kernel=node.int("KernelSize"),
                   ofm=node.int(node.first(("OutImgDims", "OutImgDim"))), ibits=node.bits(idt),
                   obits=node.bits(odt if odt in node.attrs else idt), function=function,
                   settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((1, self.ofm, self.ofm, self.kernel * self.kernel * self.channels), DataType.of(self.ibits))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        odt = DataType.of(self.obits, idt.signed)
        attrs = self.finn_attrs(Channels=self.channels, KernelSize=[self.kernel] * 2, Function=self.function,
                                OutImgDims=[self.ofm] * 2, InputDataType=idt.name, OutputDataType=odt.name)
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((1, self.ofm, self.ofm, self.channels), odt)])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        from .swg import window_values

        k = node.int("KernelSize")
        idt = node.first(("InputDataType", "inputDataType", "dataType"))
        odt = node.first(("OutputDataType", "outputDataType"), idt)
        windows = window_values(ctx, inputs[0], node.int(node.first(("OutImgDims", "OutImgDim"))), k * k,
                                node.int("Channels"))
        if node.get("Function", "MaxPool") == "MaxPool":  # opset 17: ReduceMax takes axes as an attribute
            return [ctx.op("ReduceMax", [windows], axes=[3], keepdims=0)]
        total = ctx.op("ReduceSum", [windows, ctx.ints([3], "axes")], keepdims=0)
        in_bits, out_bits = node.bits(idt), node.bits(odt if odt in node.attrs else idt)
        shift = max(0, ((2 ** in_bits - 1) * k * k).bit_length() - out_bits)
        return [ctx.op("Floor", [ctx.affine(total, 1 / 2 ** shift)]) if shift else total]


@dataclass(eq=False)
class StreamingMaxPool(FinnLayer):
    name: str
    channels: int
    ifm: int
    pool: int = 2
    ibits: int = 1
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "StreamingMaxPool"
    finn_op_types: ClassVar[tuple[str, ...]] = (
        "StreamingMaxPool_Batch", "StreamingMaxPool", "StreamingMaxPool_hls")

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

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> StreamingMaxPool:
        return cls(node.name, channels=node.int("NumChannels"), ifm=node.int("ImgDim"), pool=node.int("PoolDim"),
                   ibits=node.bits("dataType"), settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((1, self.ifm, self.ifm, self.channels), DataType.of(self.ibits))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        attrs = self.finn_attrs(ImgDim=[self.ifm] * 2, PoolDim=[self.pool] * 2, NumChannels=self.channels,
                                dataType=idt.name)
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((1, self.ofm, self.ofm, self.channels), idt)])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        ifm, pool, channels = node.int("ImgDim"), node.int("PoolDim"), node.int("NumChannels")
        ofm = ifm // pool
        x = ctx.reshape(inputs[0], (1, ifm, ifm, channels))
        if ofm * pool != ifm:  # floor mode drops the incomplete last row and column of windows
            x = ctx.op("Slice", [x, ctx.ints([0, 0], "starts"), ctx.ints([ofm * pool] * 2, "ends"),
                                 ctx.ints([1, 2], "axes")])
        blocks = ctx.reshape(x, (1, ofm, pool, ofm, pool, channels))
        return [ctx.op("ReduceMax", [blocks], axes=[2, 4], keepdims=0)]
