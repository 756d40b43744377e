"""StreamingDataWidthConverter (FINN `StreamingDataWidthConverter_Batch` v0.6, `_hls`/`_rtl` today).

v0.6 LUT estimate: with intw = lcm(in, out), LUT = |ceil(log2(in/intw))| + intw (if in != intw)
+ |ceil(log2(intw/out))| + out (if intw != out) — a shift-register implementation. No BRAM/DSP.
Cycles: FINN defines none; we use the words per frame on the narrower side, ceil(bits/min(in, out)).
No folding; impl_style hls|rtl cost the same here.

FINN semantics: the identity (only the stream's word width changes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..finn_node import FinnNode
from .base import SETTINGS_ATTRS, FinnLayer, FinnNodeSpec, Tensor, ceil_div, lanes_out, res

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering


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
    finn_op_types: ClassVar[tuple[str, ...]] = (
        "StreamingDataWidthConverter_Batch", "StreamingDataWidthConverter", "StreamingDataWidthConverter_rtl",
        "StreamingDataWidthConverter_hls")
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

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> StreamingDataWidthConverter:
        bits = node.bits("dataType")
        shape = node.ints(node.first(("shape", "in_shape")))
        return cls(node.name, in_width_bits=node.int("inWidth"), out_bits=node.int("outWidth"),
                   bits_per_frame=math.prod(shape) * bits, settings=node.settings(SETTINGS_ATTRS))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        tensor = inputs[0]
        attrs = self.finn_attrs(inWidth=self.in_width_bits, outWidth=self.out_bits, shape=list(tensor.shape),
                                dataType=tensor.dtype.name)
        return FinnNodeSpec(self.export_op_type, attrs, [tensor])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        return [lanes_out(ctx, inputs[0], ctx.op("Identity", [inputs[0]]))]
