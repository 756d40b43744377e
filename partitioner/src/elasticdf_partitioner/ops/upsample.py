"""UpsampleNearestNeighbour (FINN `UpsampleNearestNeighbour_Batch` since v0.7, `UpsampleNearestNeighbour` /
`UpsampleNearestNeighbour_hls` today): nearest-neighbour upsampling by an integer factor, what FINN's
`InferUpsample` makes of a QONNX Resize/Upsample(mode=nearest) on an integer NHWC tensor.

- Cycles: FINN's `get_exp_cycles`: OFMDim² per frame (DimMode 0, square 2D), OFMDim (DimMode 1, 1D along H).
  The HLS block writes one output pixel of all channels per cycle; it has no folding.
- Resources: FINN estimates 0 for every resource. The 2D block keeps one input row (`RowBuf[IFMDim]` of
  NumChannels·bits) to repeat it for the next rows; we count that buffer with FINN's RAMB18 width/depth rule
  and LUT = 50 + NumChannels·bits (the output register and its mux, plus counters). The 1D block keeps one
  pixel in registers: no RAM.

FINN semantics: out[y, x] = in[y // s, x // s] with s = OFMDim / IFMDim (DimMode 1: out[y] = in[y // s]).
We accept only OFMDim = s·IFMDim: `InferUpsample` makes nothing else, finn-hlslib's 1D block asserts it, and its
2D block's padding branch for other sizes reads past the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..errors import InputError
from ..finn_node import DataType, FinnNode
from .base import SETTINGS_ATTRS, SMALL_OP_LUT, FinnLayer, FinnNodeSpec, Tensor, bram18_width_depth, input_type, res

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering

DIM_MODES = (0, 1)  # FINN DimMode: 0 = square 2D image, 1 = 1D along H (W = 1)


@dataclass(eq=False)
class UpsampleNearestNeighbour(FinnLayer):
    name: str
    channels: int
    ifm: int
    scale: int = 2
    ibits: int = 8
    dim_mode: int = 0
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "UpsampleNearestNeighbour"
    finn_op_types: ClassVar[tuple[str, ...]] = (
        "UpsampleNearestNeighbour_Batch", "UpsampleNearestNeighbour", "UpsampleNearestNeighbour_hls")
    folding_attrs: ClassVar[tuple[str, ...]] = ()

    @property
    def ofm(self) -> int:
        return self.ifm * self.scale

    @property
    def pixels_out(self) -> int:
        return self.ofm * self.ofm if self.dim_mode == 0 else self.ofm

    def foldings(self) -> list[dict[str, int]]:
        return [{}]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{}]

    def cycles(self, folding: dict[str, int]) -> int:
        return self.pixels_out

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        width = self.channels * self.ibits
        row_buffer = bram18_width_depth(self.ifm, width) if self.dim_mode == 0 else 0
        return res(lut=SMALL_OP_LUT + width, bram18=row_buffer)

    def in_width(self, folding: dict[str, int]) -> int:
        return self.channels * self.ibits

    def out_width(self, folding: dict[str, int]) -> int:
        return self.channels * self.ibits

    @property
    def out_bits_per_frame(self) -> int:
        return self.pixels_out * self.channels * self.ibits

    def describe(self) -> str:
        return f"{self.ifm}->{self.ofm} C{self.channels} {self.ibits}b"

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> UpsampleNearestNeighbour:
        ifm, ofm, dim_mode = cls.dims(node)
        return cls(node.name, channels=node.int("NumChannels"), ifm=ifm, scale=ofm // ifm,
                   ibits=node.bits("inputDataType"), dim_mode=dim_mode, settings=node.settings(SETTINGS_ATTRS))

    @staticmethod
    def dims(node: FinnNode) -> tuple[int, int, int]:
        """(IFMDim, OFMDim, DimMode), or an InputError naming the node when FINN's block cannot compute it."""
        ifm, ofm, dim_mode = node.int("IFMDim"), node.int("OFMDim"), node.int("DimMode", 0)
        if dim_mode not in DIM_MODES:
            raise InputError(node.where("DimMode"), f"unknown mode {dim_mode}", [str(m) for m in DIM_MODES])
        if ifm < 1 or ofm % ifm or ofm <= ifm:
            raise InputError(node.where("OFMDim"), f"OFMDim {ofm} must be an integer multiple (>= 2) of IFMDim "
                                                   f"{ifm}, as FINN's InferUpsample makes it")
        return ifm, ofm, dim_mode

    def image(self, size: int) -> tuple[int, ...]:
        return (1, size, size, self.channels) if self.dim_mode == 0 else (1, size, 1, self.channels)

    def finn_input(self) -> Tensor:
        return Tensor(self.image(self.ifm), DataType.of(self.ibits))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        attrs = self.finn_attrs(OFMDim=self.ofm, IFMDim=self.ifm, NumChannels=self.channels,
                                inputDataType=idt.name, numInputVectors=1, DimMode=self.dim_mode)
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor(self.image(self.ofm), idt)])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        """Each row (and, in 2D, each pixel of a row) repeated s times: Expand on a new axis after H and W."""
        ifm, ofm, dim_mode = cls.dims(node)
        s, c = ofm // ifm, node.int("NumChannels")
        width = ifm if dim_mode == 0 else 1
        x = ctx.reshape(inputs[0], (1, ifm, 1, width, 1, c))
        repeats = (1, 1, s, 1, s if dim_mode == 0 else 1, 1)
        grown = ctx.op("Expand", [x, ctx.ints(repeats, "repeats")])
        return [ctx.reshape(grown, (1, ofm, ofm if dim_mode == 0 else 1, c))]
