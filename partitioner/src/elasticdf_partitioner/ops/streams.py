"""AddStreams and DuplicateStreams (FINN `AddStreams_Batch`/`DuplicateStreams_Batch` v0.6, `*_hls` today):
the join and fork of residual branches.

cycles = N_vec·C/P (reference §3.1); PE divides C. FINN v0.6 estimates 0 LUT; we use
- AddStreams: LUT = 50 + P·(A+1)   (one adder bit per output bit of each PE lane, plus control)
- DuplicateStreams: LUT = 50 + P·A (output registers/handshake per lane, plus control)
No memory, no DSP, one variant. AddStreams outputs A+1 bits; DuplicateStreams has two outputs of A bits
(each graph edge out of it carries the whole stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import SMALL_OP_LUT, FinnLayer, MovesValues, divisors, res


@dataclass(eq=False)
class _PerChannelStream(MovesValues, FinnLayer):
    name: str
    channels: int
    n_vec: int = 1
    ibits: int = 4
    settings: dict = field(default_factory=dict)

    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)

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


@dataclass(eq=False)
class AddStreams(_PerChannelStream):
    op: ClassVar[str] = "AddStreams"

    @property
    def obits(self) -> int:
        return self.ibits + 1

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=SMALL_OP_LUT + folding["PE"] * (self.ibits + 1))


@dataclass(eq=False)
class DuplicateStreams(_PerChannelStream):
    op: ClassVar[str] = "DuplicateStreams"

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(lut=SMALL_OP_LUT + folding["PE"] * self.ibits)
