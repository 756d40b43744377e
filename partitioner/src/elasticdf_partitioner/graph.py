"""Model graphs: a DAG of FINN dataflow layers in topological order.

Residual branches appear as DuplicateStreams -> two branches -> AddStreams. A cut of the pipeline between
positions p-1 and p crosses every edge (u, v) with u < p <= v; the solver prices those crossings.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from .errors import InputError
from .options import Option
from .resources import Resources


class Layer(ABC):
    """One FINN dataflow node. Subclasses (one per op family, in ops/) hold the shapes and datatypes and
    implement the FINN v0.6 cost formulas; `settings` holds the folding/variant the model came with."""

    op: ClassVar[str]
    finn_op_types: ClassVar[tuple[str, ...]] = ()  # FINN's names of this op (v0.6 and today's)
    folding_attrs: ClassVar[tuple[str, ...]] = ()
    variant_attrs: ClassVar[tuple[str, ...]] = ()

    name: str
    settings: dict[str, int | str]

    @abstractmethod
    def foldings(self) -> list[dict[str, int]]:
        """Every legal folding (divisor rules, weight-width caps)."""

    @abstractmethod
    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        """Every implementation variant for a folding (resType, ram_style, mem_mode, ...)."""

    @abstractmethod
    def cycles(self, folding: dict[str, int]) -> int:
        """Clock cycles per frame."""

    @abstractmethod
    def resources(self, folding: dict[str, int], variant: dict[str, str]) -> Resources:
        """LUT/FF/BRAM18/URAM/DSP estimate."""

    @abstractmethod
    def out_width(self, folding: dict[str, int]) -> int:
        """Output stream width in bits per cycle."""

    @property
    @abstractmethod
    def out_bits_per_frame(self) -> int:
        """Bits this layer emits per frame (what a cut after it moves over the network)."""

    def option(self, folding: dict[str, int], variant: dict[str, str]) -> Option:
        return Option.of(folding, variant, self.cycles(folding), self.resources(folding, variant),
                         self.out_width(folding))

    def options(self) -> list[Option]:
        return [self.option(f, v) for f in self.foldings() for v in self.variants(f)]

    def current(self) -> Option:
        """The option given by `settings` (e.g. FINN's published folding)."""
        folding = {a: int(self.settings[a]) for a in self.folding_attrs if a in self.settings}
        folding = {**self.default_folding(), **folding}
        variant = {a: str(self.settings[a]) for a in self.variant_attrs if a in self.settings}
        variant = {**self.variants(folding)[0], **variant}
        return self.option(folding, variant)

    def default_folding(self) -> dict[str, int]:
        return {a: 1 for a in self.folding_attrs}


@dataclass(frozen=True)
class Tie:
    """producer.attr must equal consumer.attr (a depthwise SWG's SIMD follows its VVAU's/Pool's PE)."""

    producer: str
    producer_attr: str
    consumer: str
    consumer_attr: str


@dataclass
class ModelGraph:
    name: str
    layers: list[Layer]
    edges: list[tuple[int, int]]
    ties: list[Tie] = field(default_factory=list)
    input_bits_per_frame: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        names = [layer.name for layer in self.layers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError("layers", f"duplicate layer names {duplicates}")
        for u, v in self.edges:
            if not 0 <= u < v < len(self.layers):
                raise InputError("edges", f"edge {u}->{v} is not forward in topological order")

    def index(self, name: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise InputError("layer", f"no layer named {name!r}", [layer.name for layer in self.layers][:10] + ["..."])

    def max_cycles(self) -> int:
        return max(layer.current().cycles for layer in self.layers)

    def total_resources(self) -> Resources:
        total = Resources()
        for layer in self.layers:
            total = total + layer.current().res
        return total

    def crossing_edges(self, position: int) -> list[tuple[int, int]]:
        """Edges a cut before layer `position` crosses."""
        return [(u, v) for u, v in self.edges if u < position <= v]

    def successors(self, index: int) -> list[int]:
        return [v for u, v in self.edges if u == index]

    def folding_config(self) -> dict:
        """FINN folding-config JSON (ApplyConfig format) for the current settings."""
        config: dict = {"Defaults": {}}
        for layer in self.layers:
            extra = layer.extra_settings() if hasattr(layer, "extra_settings") else {}
            config[layer.name] = {**layer.current().settings(), **extra}
        return config

    def apply_folding_config(self, config: dict) -> None:
        """Set each named layer's attributes from a FINN folding-config dict; Defaults apply to listed ops.

        All or nothing: on an InputError every layer keeps the settings it had."""
        saved = [dict(layer.settings) for layer in self.layers]
        try:
            self._apply_folding_config(config)
        except InputError:
            for layer, settings in zip(self.layers, saved):
                layer.settings.clear()
                layer.settings.update(settings)
            raise

    def _apply_folding_config(self, config: dict) -> None:
        if not isinstance(config, dict):
            raise InputError("folding config", "expected a JSON object of node name -> attributes")
        defaults = config.get("Defaults", {})
        if not isinstance(defaults, dict):
            raise InputError("folding config: Defaults", "expected an object of attribute -> [value, op types]")
        for attr, entry in defaults.items():
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise InputError(f"folding config: Defaults.{attr}", "expected [value, op types or \"all\"]")
            value, ops = entry
            for layer in self.layers:
                if _default_applies(layer, ops) and attr in layer.folding_attrs + layer.variant_attrs:
                    layer.settings[attr] = value
        for node, attrs in config.items():
            if node == "Defaults":
                continue
            layer = self.layers[self.index(node)]
            if not isinstance(attrs, dict):
                raise InputError(f"folding config: {node}", "expected an object of attribute -> value")
            for attr, value in attrs.items():
                layer.settings[attr] = value
        for layer in self.layers:
            self._check_legal(layer)
        self.check_ties()

    def check_ties(self) -> None:
        """Every Tie holds for the current settings (a depthwise SWG's SIMD equals its consumer's PE)."""
        for tie in self.ties:
            produced = dict(self.layers[self.index(tie.producer)].current().folding).get(tie.producer_attr)
            consumed = dict(self.layers[self.index(tie.consumer)].current().folding).get(tie.consumer_attr)
            if produced != consumed:
                raise InputError(f"{tie.producer}.{tie.producer_attr}",
                                 f"must equal {tie.consumer}.{tie.consumer_attr} = {consumed}, got {produced}",
                                 [consumed])

    def _check_legal(self, layer: Layer) -> None:
        if hasattr(layer, "check_settings"):
            layer.check_settings()
        try:
            folding = layer.current().folding
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(f"{layer.name} ({layer.op})", f"unusable settings {layer.settings}: {err}") from None
        legal = layer.foldings()
        if dict(folding) not in legal:  # a dict compare: every model load checks every layer's thousands
            shown = [dict(sorted(f.items())) for f in itertools.islice(legal, 12)]
            raise InputError(f"{layer.name} ({layer.op})", f"illegal folding {dict(folding)}", shown)


def _default_applies(layer: Layer, ops: object) -> bool:
    """FINN ApplyConfig Defaults: ops is "all", ["all"] or a list of op types (FINN names or ours)."""
    if ops == "all":
        return True
    if isinstance(ops, str):
        ops = [ops]
    if not isinstance(ops, list | tuple):
        return False
    return any(o == "all" or o == layer.op or o in layer.finn_op_types for o in ops)
