"""The five FPGA resource kinds and arithmetic over them."""

from __future__ import annotations

from typing import NamedTuple

RESOURCE_KINDS = ("lut", "ff", "bram18", "uram", "dsp")


class Resources(NamedTuple):
    lut: float = 0
    ff: float = 0
    bram18: float = 0
    uram: float = 0
    dsp: float = 0

    def __add__(self, other: Resources) -> Resources:  # type: ignore[override]
        return Resources(*(a + b for a, b in zip(self, other)))

    def __sub__(self, other: Resources) -> Resources:
        return Resources(*(a - b for a, b in zip(self, other)))

    def scale(self, factors: Resources | float) -> Resources:
        if isinstance(factors, (int, float)):
            return Resources(*(a * factors for a in self))
        return Resources(*(a * f for a, f in zip(self, factors)))

    def fits_in(self, capacity: Resources) -> bool:
        return all(a <= c + 1e-9 for a, c in zip(self, capacity))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(RESOURCE_KINDS, self))

    @classmethod
    def from_list(cls, values: list[float]) -> Resources:
        if len(values) != len(RESOURCE_KINDS):
            raise ValueError(f"expected {len(RESOURCE_KINDS)} values {list(RESOURCE_KINDS)}, got {values!r}")
        return cls(*values)


ZERO = Resources()
