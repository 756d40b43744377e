"""Table-driven layers and toy clusters with explicit options: small problems whose optimum can be checked
exhaustively (the solver's exactness tests and heuristic-gap benchmark use them)."""

from __future__ import annotations

from ..catalog import CardType, Catalog, load_catalog
from ..cluster import Card, Cluster
from ..graph import Layer, ModelGraph
from ..resources import Resources


class TableLayer(Layer):
    """A layer whose options are given as a table: option i has folding {"PE": i + 1}."""

    op = "Table"
    folding_attrs = ("PE",)

    def __init__(self, name: str, table: list[tuple[int, Resources, int]], bits_per_frame: int = 1000):
        self.name = name
        self.table = table
        self.settings = {"PE": 1}
        self._bits = bits_per_frame

    def foldings(self):
        return [{"PE": i + 1} for i in range(len(self.table))]

    def variants(self, folding):
        return [{}]

    def cycles(self, folding):
        return self.table[folding["PE"] - 1][0]

    def resources(self, folding, variant):
        return self.table[folding["PE"] - 1][1]

    def out_width(self, folding):
        return self.table[folding["PE"] - 1][2]

    @property
    def out_bits_per_frame(self):
        return self._bits


def chain(name: str, tables: list[list[tuple[int, Resources, int]]], extra_edges=()) -> ModelGraph:
    layers = [TableLayer(f"L{i}", t) for i, t in enumerate(tables)]
    edges = [(i, i + 1) for i in range(len(layers) - 1)] + list(extra_edges)
    return ModelGraph(name, layers, sorted(set(edges)))


def toy_cluster(slr_luts: list[list[float]], eth_slrs: list[int], fclk: float = 100.0,
                sll: int = 5000) -> Cluster:
    """Cards with only LUT/DSP capacity (no shell IP); limits are applied by the solver."""
    base = load_catalog()
    cards_types = {}
    cards = []
    for i, (luts, eth) in enumerate(zip(slr_luts, eth_slrs)):
        t = CardType(name=f"toy{i}", part="toy", slrs=[[lut, 2 * lut, 100, 0, 100] for lut in luts],
                     ddr_slrs=[], hbm_slr=None, eth_slr=eth, sll_per_pair=sll, qsfp_ports=1, fclk_mhz=fclk,
                     cost_per_hour=1.0)
        cards_types[t.name] = t
        cards.append(Card(i, f"node{i}", 0, t, "default"))
    catalog = Catalog(ip_costs=base.ip_costs.model_copy(update={"eth": [10, 0, 0, 0, 0]}), cards=cards_types)
    return Cluster(cards, {}, {}, catalog)
