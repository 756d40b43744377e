"""A small helper to assemble a ModelGraph layer by layer in topological order."""

from __future__ import annotations

import json
from importlib import resources as importlib_resources

from ..graph import ModelGraph, Tie
from ..ops import FinnLayer
from ..ops.mvau import DEFAULT_WWIDTH_MAX


def load_folding(filename: str) -> dict:
    """A published FINN folding config stored in package data (data/folding/)."""
    text = importlib_resources.files("elasticdf_partitioner").joinpath(f"data/folding/{filename}").read_text()
    return json.loads(text)


def wwidth_cap(wbits: int, simd: int) -> int:
    """SetFolding's weight-width cap, raised so the published SIMD stays legal."""
    return max(DEFAULT_WWIDTH_MAX, wbits * simd)


class GraphBuilder:
    def __init__(self, name: str):
        self.name = name
        self.layers: list[FinnLayer] = []
        self.edges: list[tuple[int, int]] = []
        self.ties: list[Tie] = []

    @property
    def last(self) -> int:
        return len(self.layers) - 1

    def add(self, layer: FinnLayer, inputs: list[int] | None = None) -> int:
        """Append a layer fed by `inputs` (default: the previously added layer); returns its index."""
        if inputs is None:
            inputs = [self.last] if self.layers else []
        index = len(self.layers)
        self.layers.append(layer)
        self.edges.extend((i, index) for i in inputs)
        return index

    def tie(self, producer: int, consumer: int, producer_attr: str = "SIMD", consumer_attr: str = "PE") -> None:
        self.ties.append(Tie(self.layers[producer].name, producer_attr, self.layers[consumer].name, consumer_attr))

    def build(self, input_bits_per_frame: int, description: str) -> ModelGraph:
        return ModelGraph(self.name, list(self.layers), list(self.edges), list(self.ties),
                          input_bits_per_frame=input_bits_per_frame, description=description)
