"""Thresholding (FINN `Thresholding_Batch` v0.6, `Thresholding_hls`/`_rtl` today): multi-threshold activation.

v0.6 model, with P = PE, A = input bits, TMEM = C/P, N_vec pixels:
- cycles = N_vec·C/P
- LUT = A·P (comparators) + P·A·ceil(TMEM/64) when ram_style distributed and TMEM > 1
- BRAM18 = ceil(A·P/16)·ceil(TMEM/1024) when ram_style block and TMEM > 1
Folding: PE divides C. Variants: ram_style distributed (FINN default) | block.

FINN semantics: per channel, the number of thresholds (NumChannels × numSteps, ascending) the input reaches
(x >= T), plus ActVal; a BIPOLAR output maps that to 2·y - 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..finn_node import DataType, FinnNode
from .base import (
    SETTINGS_ATTRS,
    FinnLayer,
    FinnNodeSpec,
    LaneStreams,
    Tensor,
    ceil_div,
    default_vectors,
    divisors,
    input_type,
    res,
    spread_thresholds,
)

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering


def threshold_memory_cost(p: int, a: int, tmem: float, style: str):
    """Shared by Thresholding and ChannelwiseOp (same v0.6 estimate)."""
    lut = a * p
    bram = 0
    if tmem > 1:
        if style == "distributed":
            lut += p * a * ceil_div(tmem, 64)
        elif style in ("block", "auto"):
            bram = ceil_div(a * p, 16) * ceil_div(tmem, 1024)
    return res(lut=lut, bram18=bram)


@dataclass(eq=False)
class Thresholding(LaneStreams, FinnLayer):
    name: str
    channels: int
    n_vec: int = 1
    ibits: int = 4
    obits: int = 2
    settings: dict = field(default_factory=dict)
    vectors: tuple[int, ...] = ()  # FINN numInputVectors; () derives it from n_vec (default_vectors)

    op: ClassVar[str] = "Thresholding"
    finn_op_types: ClassVar[tuple[str, ...]] = (
        "Thresholding_Batch", "Thresholding", "Thresholding_rtl", "Thresholding_hls")
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)
    variant_attrs: ClassVar[tuple[str, ...]] = ("ram_style",)
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {"ram_style": ("distributed", "block", "auto")}

    def __post_init__(self) -> None:
        self.vectors = tuple(self.vectors) or default_vectors(self.n_vec)

    def foldings(self) -> list[dict[str, int]]:
        return [{"PE": p} for p in divisors(self.channels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{"ram_style": "distributed"}, {"ram_style": "block"}]

    def cycles(self, folding: dict[str, int]) -> int:
        return self.n_vec * (self.channels // folding["PE"])

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        p = folding["PE"]
        return threshold_memory_cost(p, self.ibits, self.channels / p, variant.get("ram_style", "distributed"))

    @property
    def out_bits_per_frame(self) -> int:
        return self.n_vec * self.channels * self.obits

    def describe(self) -> str:
        return f"C{self.channels} x{self.n_vec} {self.ibits}->{self.obits}b"

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> Thresholding:
        return cls(node.name, channels=node.int("NumChannels"), n_vec=node.n_vec(), vectors=node.vectors(),
                   ibits=node.bits("inputDataType"), obits=node.bits("outputDataType"),
                   settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((*self.vectors, self.channels), DataType.of(self.ibits))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        """Thresholds spread over the input datatype's range, so every output level occurs."""
        idt = input_type(inputs[0], self.ibits)
        odt = DataType.of(self.obits)
        steps = 2 ** self.obits - 1
        thresholds = spread_thresholds(rng, idt.min, idt.max, self.channels, steps)
        tdt = DataType.holding(float(thresholds.min()), float(thresholds.max()))
        attrs = self.finn_attrs(NumChannels=self.channels, numSteps=steps, inputDataType=idt.name,
                                weightDataType=tdt.name, outputDataType=odt.name, ActVal=0,
                                numInputVectors=list(self.vectors))
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((*self.vectors, self.channels), odt)], [thresholds])

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        from ..lowering import multithreshold

        act = int(node.get("ActVal", 0))
        scale, bias = (2, 2 * act - 1) if node.dtype("outputDataType").bipolar else (1, act)
        idt = node.dtype("inputDataType")
        value_range = (int(idt.min), int(idt.max)) if idt.integer else None
        return [multithreshold(ctx, inputs[0], node.param(1), scale, bias, value_range)]
