"""AddStreams and DuplicateStreams (FINN `AddStreams_Batch`/`DuplicateStreams_Batch` v0.6, `*_hls` today):
the join and fork of residual branches.

cycles = N_vec·C/P (reference §3.1); PE divides C. FINN v0.6 estimates 0 LUT; we use
- AddStreams: LUT = 50 + P·(A+1)   (one adder bit per output bit of each PE lane, plus control)
- DuplicateStreams: LUT = 50 + P·A (output registers/handshake per lane, plus control)
No memory, no DSP, one variant. AddStreams outputs A+1 bits; DuplicateStreams has two outputs of A bits
(each graph edge out of it carries the whole stream).

FINN semantics: AddStreams adds its two inputs elementwise (output type one bit wider); DuplicateStreams copies
its input to each of its NumOutputStreams outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..finn_node import DataType, FinnNode
from .base import (
    SETTINGS_ATTRS,
    SMALL_OP_LUT,
    FinnLayer,
    FinnNodeSpec,
    MovesValues,
    Tensor,
    default_vectors,
    divisors,
    input_type,
    lanes_out,
    res,
)

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering


@dataclass(eq=False)
class _PerChannelStream(MovesValues, FinnLayer):
    name: str
    channels: int
    n_vec: int = 1
    ibits: int = 4
    settings: dict = field(default_factory=dict)
    vectors: tuple[int, ...] = ()  # FINN numInputVectors; () derives it from n_vec (default_vectors)

    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)

    def __post_init__(self) -> None:
        self.vectors = tuple(self.vectors) or default_vectors(self.n_vec)

    def foldings(self) -> list[dict[str, int]]:
        return [{"PE": p} for p in divisors(self.channels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{}]

    def cycles(self, folding: dict[str, int]) -> int:
        return self.n_vec * (self.channels // folding["PE"])

    @property
    def out_bits_per_frame(self) -> int:
        return self.n_vec * self.channels * self.obits

    def describe(self) -> str:
        return f"C{self.channels} x{self.n_vec} {self.ibits}b"

    @classmethod
    def from_finn(cls, node: FinnNode) -> _PerChannelStream:
        return cls(node.name, channels=node.int("NumChannels"), n_vec=node.n_vec(), vectors=node.vectors(),
                   ibits=node.bits("inputDataType"), settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((*self.vectors, self.channels), DataType.of(self.ibits))

    def stream_spec(self, inputs: list[Tensor], odt: DataType, outputs: int = 1, **attrs) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        attrs = self.finn_attrs(NumChannels=self.channels, inputDataType=idt.name,
                                numInputVectors=list(self.vectors), **attrs)
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((*self.vectors, self.channels), odt)] * outputs)


@dataclass(eq=False)
class AddStreams(_PerChannelStream):
    op: ClassVar[str] = "AddStreams"
    finn_op_types: ClassVar[tuple[str, ...]] = ("AddStreams_Batch", "AddStreams", "AddStreams_hls")

    @property
    def obits(self) -> int:
        return self.ibits + 1

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=SMALL_OP_LUT + folding["PE"] * (self.ibits + 1))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        return self.stream_spec(inputs, DataType.of(self.ibits + 1, idt.signed))

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        from ..lowering import exact_type

        idt = node.dtype("inputDataType")
        elem = exact_type(2 * idt.min, 2 * idt.max)
        return [ctx.op("Add", [ctx.cast(x, elem) for x in inputs])]


@dataclass(eq=False)
class DuplicateStreams(_PerChannelStream):
    outputs: int = 2

    op: ClassVar[str] = "DuplicateStreams"
    finn_op_types: ClassVar[tuple[str, ...]] = ("DuplicateStreams_Batch", "DuplicateStreams", "DuplicateStreams_hls")

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=SMALL_OP_LUT + folding["PE"] * self.ibits)

    @classmethod
    def from_finn(cls, node: FinnNode) -> DuplicateStreams:
        layer = super().from_finn(node)
        layer.outputs = node.int("NumOutputStreams", len(node.proto.output))
        return layer

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        return self.stream_spec(inputs, idt, self.outputs, NumOutputStreams=self.outputs)

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        return [lanes_out(ctx, inputs[0], ctx.op("Identity", [inputs[0]])) for _ in node.proto.output]
