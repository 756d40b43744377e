"""A layer's options: the vectorised Pareto pruning keeps exactly what keeping a front option by option keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from elasticdf_partitioner.ops.base import FinnLayer, sorted_front
from elasticdf_partitioner.options import Option
from elasticdf_partitioner.resources import Resources
from hypothesis import given, settings
from hypothesis import strategies as st


def _le(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b))


def options_by_definition(layer: FinnLayer) -> list[Option]:
    """Per folding, keep a variant unless a kept one is <= it in every resource (dropping the kept ones it is
    <= in every resource); then, across foldings in (cycles, res, out_width) order, keep an option unless a
    kept one is <= it in cycles, every resource and output width."""
    per_folding: list[Option] = []
    for folding in layer.foldings():
        kept: list[Option] = []
        for variant in layer.variants(folding):
            option = layer.option(folding, variant)
            if not any(_le(k.res, option.res) for k in kept):
                kept = [k for k in kept if not _le(option.res, k.res)] + [option]
        per_folding.extend(kept)
    if not layer.prune_across_foldings:
        return per_folding
    front: list[Option] = []
    for option in sorted(per_folding, key=lambda o: (o.cycles, o.res, o.out_width)):
        if not any(_le((k.cycles, *k.res, k.out_width), (option.cycles, *option.res, option.out_width))
                   for k in front):
            front.append(option)
    return front


@dataclass(eq=False)
class TableLayer(FinnLayer):
    """A layer whose costs are a table: per folding (PE = its index) a cycle count, an output width and the
    resources of each variant."""

    name: str
    table: tuple = ()
    across: bool = True
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "TableLayer"
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)
    variant_attrs: ClassVar[tuple[str, ...]] = ("resType",)

    @property
    def prune_across_foldings(self) -> bool:  # type: ignore[override]
        return self.across

    def foldings(self) -> list[dict[str, int]]:
        return [{"PE": pe} for pe in range(len(self.table))]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{"resType": str(v)} for v in range(len(self.table[folding["PE"]][2]))]

    def cycles(self, folding: dict[str, int]) -> int:
        return self.table[folding["PE"]][0]

    def out_width(self, folding: dict[str, int]) -> int:
        return self.table[folding["PE"]][1]

    def resources(self, folding: dict[str, int], variant: dict[str, str]) -> Resources:
        return Resources(*self.table[folding["PE"]][2][int(variant["resType"])])

    @property
    def out_bits_per_frame(self) -> int:
        return 8


small = st.integers(0, 3)
folding_costs = st.tuples(st.integers(1, 4), st.integers(1, 3),
                          st.lists(st.tuples(small, small, small, small, small), min_size=1, max_size=6))


@settings(max_examples=300, deadline=None)
@given(st.lists(folding_costs, max_size=30), st.booleans())
def test_options_equal_the_front_kept_option_by_option(table, across):
    layer = TableLayer("t", tuple(table), across)
    assert layer._build_options() == options_by_definition(layer)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(small, small, small), max_size=300))
def test_sorted_front_spans_blocks(rows):
    """Rows beaten only by a row of an earlier block are dropped too (blocks of 4 here)."""
    table = np.array(sorted(rows), dtype=float).reshape(len(rows), 3)
    expected = [i for i in range(len(table)) if not any(_le(table[j], table[i]) for j in range(i))]
    assert sorted_front(table, block=4).tolist() == expected
