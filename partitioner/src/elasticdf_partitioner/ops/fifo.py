"""StreamingFIFO (FINN `StreamingFIFO` v0.6, `StreamingFIFO_rtl` today), W = stream width, D = depth.

v0.6 estimates (reference §3.2):
- LUT = 2·ceil(log2 D) + ceil(D/32)·ceil(W/2) for impl_style rtl (SRL-based) or vivado+distributed
- BRAM18 (vivado + block/auto) = FINN's RAMB18 width/depth rule with (D, W)
- URAM (vivado + ultra) = ceil(D/4096)·ceil(W/72)
Cycles: FINN defines none (0). We use the number of stream words per frame, ceil(bits/W): a FIFO moves one word
per cycle, so this never exceeds its neighbours' cycles but gives edges a finite bit-rate.
Depth is a setting (`depth`, from the folding config), not a folding. Variants: (impl_style, ram_style) in
rtl/auto, vivado/block, vivado/distributed, vivado/ultra.

FINN semantics: the identity (a FIFO delays values, never changes them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..finn_node import FinnNode
from .base import SETTINGS_ATTRS, FinnLayer, FinnNodeSpec, Tensor, bram18_width_depth, ceil_div, clog2, lanes_out, res

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering


@dataclass(eq=False)
class StreamingFIFO(FinnLayer):
    name: str
    width: int
    depth: int = 32
    bits_per_frame: int = 0
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "StreamingFIFO"
    finn_op_types: ClassVar[tuple[str, ...]] = ("StreamingFIFO", "StreamingFIFO_rtl")
    variant_attrs: ClassVar[tuple[str, ...]] = ("impl_style", "ram_style")
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {
        "impl_style": ("rtl", "vivado"),
        "ram_style": ("auto", "block", "distributed", "ultra"),
    }
    cost_settings: ClassVar[tuple[str, ...]] = ("depth",)

    def current_depth(self) -> int:
        return int(self.settings.get("depth", self.depth))

    def extra_settings(self) -> dict[str, int | str]:
        return {"depth": self.current_depth()}

    def foldings(self) -> list[dict[str, int]]:
        return [{}]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{"impl_style": "rtl", "ram_style": "auto"}] + [
            {"impl_style": "vivado", "ram_style": s} for s in ("block", "distributed", "ultra")]

    def cycles(self, folding: dict[str, int]) -> int:
        return ceil_div(self.bits_per_frame, self.width)

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        d, w = self.current_depth(), self.width
        impl, style = variant.get("impl_style", "rtl"), variant.get("ram_style", "auto")
        lut = 2 * clog2(d)
        if impl == "rtl" or style == "distributed":
            return res(lut=lut + ceil_div(d, 32) * ceil_div(w, 2))
        if style == "ultra":
            return res(lut=lut, uram=ceil_div(d, 4096) * ceil_div(w, 72))
        return res(lut=lut, bram18=bram18_width_depth(d, w))

    def in_width(self, folding: dict[str, int]) -> int:
        return self.width

    def out_width(self, folding: dict[str, int]) -> int:
        return self.width

    @property
    def out_bits_per_frame(self) -> int:
        return self.bits_per_frame

    def describe(self) -> str:
        return f"{self.width}b x{self.current_depth()}"

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> StreamingFIFO:
        shape, bits = node.ints("folded_shape"), node.bits("dataType")
        return cls(node.name, width=shape[-1] * bits, depth=node.int("depth"), bits_per_frame=math.prod(shape) * bits,
                   settings=node.settings(SETTINGS_ATTRS))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        """The stream passes unchanged; folded_shape = (1, words per frame, values per word)."""
        tensor = inputs[0]
        folded = [1, self.bits_per_frame // self.width, self.width // tensor.dtype.bits]
        attrs = self.finn_attrs(depth=self.current_depth(), folded_shape=folded, normal_shape=list(tensor.shape),
                                dataType=tensor.dtype.name)
        return FinnNodeSpec(self.export_op_type, attrs, [tensor])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        return [lanes_out(ctx, inputs[0], ctx.op("Identity", [inputs[0]]))]
