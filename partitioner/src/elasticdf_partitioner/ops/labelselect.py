"""LabelSelect (FINN `LabelSelect_Batch` v0.6, `LabelSelect_hls` today): top-K over the class scores.

cycles = Labels/P (reference §3.1); PE divides Labels. FINN v0.6 estimates 0 LUT; we use
LUT = 50 + P·A + K·(A + index bits) (P input comparators plus K sorted (value, index) registers).
Output: K indices of `obits` bits (outputDataType, e.g. UINT16 in ResNet-50). One variant.

FINN semantics: ONNX TopK (largest, sorted) over the Labels scores; the output is the K indices, best first
(equal scores: the lower index first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..finn_node import DataType, FinnNode
from .base import SETTINGS_ATTRS, SMALL_OP_LUT, FinnLayer, FinnNodeSpec, Tensor, clog2, divisors, input_type, res

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering


@dataclass(eq=False)
class LabelSelect(FinnLayer):
    name: str
    labels: int
    k: int = 1
    ibits: int = 16
    obits: int = 0  # 0: ceil(log2(labels))
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "LabelSelect"
    finn_op_types: ClassVar[tuple[str, ...]] = ("LabelSelect_Batch", "LabelSelect", "LabelSelect_hls")
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)

    def __post_init__(self) -> None:
        if self.obits == 0:
            self.obits = max(1, clog2(self.labels))

    def foldings(self) -> list[dict[str, int]]:
        return [{"PE": p} for p in divisors(self.labels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{}]

    def cycles(self, folding: dict[str, int]) -> int:
        return self.labels // folding["PE"]

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=SMALL_OP_LUT + folding["PE"] * self.ibits + self.k * (self.ibits + self.obits))

    def in_width(self, folding: dict[str, int]) -> int:
        return folding["PE"] * self.ibits

    def out_width(self, folding: dict[str, int]) -> int:
        return self.obits

    @property
    def out_bits_per_frame(self) -> int:
        return self.k * self.obits

    def describe(self) -> str:
        return f"top{self.k} of {self.labels}"

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> LabelSelect:
        return cls(node.name, labels=node.int("Labels"), k=node.int("K", 1), ibits=node.bits("inputDataType"),
                   obits=node.bits("outputDataType") if "outputDataType" in node.attrs else 0,
                   settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((1, self.labels), DataType.of(self.ibits, signed=True))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        odt = DataType.of(self.obits)
        attrs = self.finn_attrs(Labels=self.labels, K=self.k, inputDataType=idt.name, outputDataType=odt.name,
                                numInputVectors=[1])
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((1, self.k), odt)])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        from ..lowering import FLOAT, TensorProto

        scores = ctx.reshape(inputs[0], (*node.vectors(), node.int("Labels")))
        _values, indices = ctx.op("TopK", [scores, ctx.ints([node.int("K", 1)], "k")], outputs=2, axis=-1,
                                  largest=1, sorted=1)
        ctx.dtype[indices] = TensorProto.INT64
        return [ctx.cast(indices, FLOAT)]
