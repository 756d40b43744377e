"""LabelSelect (FINN `LabelSelect_Batch` v0.6, `LabelSelect_hls` today): top-K over the class scores.

cycles = Labels/P (reference §3.1); PE divides Labels. FINN v0.6 estimates 0 LUT; we use
LUT = 50 + P·A + K·(A + index bits) (P input comparators plus K sorted (value, index) registers).
Output: K indices of `obits` bits (outputDataType, e.g. UINT16 in ResNet-50). One variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import SMALL_OP_LUT, FinnLayer, clog2, divisors, res


@dataclass(eq=False)
class LabelSelect(FinnLayer):
    name: str
    labels: int
    k: int = 1
    ibits: int = 16
    obits: int = 0  # 0: ceil(log2(labels))
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "LabelSelect"
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
