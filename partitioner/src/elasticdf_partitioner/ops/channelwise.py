"""ChannelwiseOp (FINN `ChannelwiseOp_Batch` v0.6, `ChannelwiseOp_hls` today): per-channel add/mul with
parameters in memory. Same v0.6 estimates as Thresholding (reference §3.2): cycles = N_vec·C/P,
LUT = A·P (+ P·A·ceil(TMEM/64) distributed), BRAM18 = ceil(A·P/16)·ceil(TMEM/1024) (block), TMEM = C/P.
Variants: ram_style distributed (FINN default) | block.

FINN semantics: x + p[c] (Func "add") or x · p[c] ("mul") along the channel (last) axis. The comparison
functions cmp_le/cmp_ge are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..errors import InputError
from ..finn_node import DataType, FinnNode
from .base import SETTINGS_ATTRS, FinnNodeSpec, Tensor, input_type
from .thresholding import Thresholding

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering

FUNCTIONS = ("add", "mul")


@dataclass(eq=False)
class ChannelwiseOp(Thresholding):
    func: str = "add"

    op: ClassVar[str] = "ChannelwiseOp"
    finn_op_types: ClassVar[tuple[str, ...]] = ("ChannelwiseOp_Batch", "ChannelwiseOp", "ChannelwiseOp_hls")

    @classmethod
    def from_finn(cls, node: FinnNode) -> ChannelwiseOp:
        func = str(node.get("Func", "cmp_le"))
        if func not in FUNCTIONS:
            raise InputError(node.where("Func"), f"unsupported channelwise function {func!r}", list(FUNCTIONS))
        return cls(node.name, channels=node.int("NumChannels"), n_vec=node.n_vec(), vectors=node.vectors(),
                   ibits=node.bits("inputDataType"), obits=node.bits("outputDataType"), func=func,
                   settings=node.settings(SETTINGS_ATTRS))

    def _params(self, rng: np.random.Generator, idt: DataType, odt: DataType) -> np.ndarray:
        """Parameters keeping every input value inside the output type where the widths allow (add: the
        headroom between the types; mul: up to 2**(obits-ibits)); equal widths get small values, which the
        accumulator-typed inputs this occurs on (biases after an FC) never push out of range."""
        if self.func == "mul":
            return rng.integers(1, 2 ** max(0, self.obits - self.ibits) + 1, self.channels).astype("float32")
        lo, hi = odt.min - idt.min, odt.max - idt.max
        if hi <= lo:
            lo, hi = -(2 ** max(0, min(idt.bits, 8) - 2)), 2 ** max(0, min(idt.bits, 8) - 2)
        return rng.integers(int(lo), int(hi) + 1, self.channels).astype("float32")

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        odt = DataType.of(self.obits, idt.signed)
        params = self._params(rng, idt, odt)
        attrs = self.finn_attrs(Func=self.func, NumChannels=self.channels, inputDataType=idt.name,
                                paramDataType=DataType.holding(float(params.min()), float(params.max())).name,
                                outputDataType=odt.name, numInputVectors=list(self.vectors))
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((*self.vectors, self.channels), odt)], [params])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        import numpy as np

        from ..lowering import exact_type

        params = node.param(1).astype(np.float64).reshape(-1)  # (C,) or one value for all channels
        idt, odt = node.dtype("inputDataType"), node.dtype("outputDataType")
        func = str(node.get("Func", "cmp_le"))
        x_max = max(abs(idt.min), abs(idt.max))
        p_max = float(np.abs(params).max(initial=0))
        elem = exact_type(x_max * p_max if func == "mul" else x_max + p_max)
        x = ctx.cast(inputs[0], elem)
        y = ctx.op(func.capitalize(), [x, ctx.const(params, "params", elem)])
        return [ctx.cast(y, exact_type(odt.min, odt.max))]
