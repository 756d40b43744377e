"""One implementation choice of a layer: its folding and variant, and what they cost."""

from __future__ import annotations

from dataclasses import dataclass

from .resources import Resources


@dataclass(frozen=True)
class Option:
    """A (folding, variant) of one layer with the cost model's cycles and resources.

    folding: parallelism attributes, e.g. (("PE", 32), ("SIMD", 16)).
    variant: implementation attributes, e.g. (("resType", "lut"), ("ram_style", "block")).
    out_width: bits per cycle on the layer's output stream (what an SLR crossing costs in SLLs).
    """

    folding: tuple[tuple[str, int], ...]
    variant: tuple[tuple[str, str], ...]
    cycles: int
    res: Resources
    out_width: int

    @classmethod
    def of(cls, folding: dict[str, int], variant: dict[str, str], cycles: int, res: Resources,
           out_width: int) -> Option:
        """The option of a layer's folding and variant settings (attributes in name order) and their costs."""
        return cls(cls.attributes(folding), cls.attributes(variant), cycles, res, out_width)

    @staticmethod
    def attributes(settings: dict) -> tuple:
        """A folding's or variant's settings as an Option holds them: (name, value) pairs in name order."""
        return tuple(sorted(settings.items()))

    def settings(self) -> dict[str, int | str]:
        """FINN node attributes this option sets (what a folding-config JSON holds)."""
        return {**dict(self.folding), **dict(self.variant)}
