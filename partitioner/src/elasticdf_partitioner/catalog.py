"""Alveo card catalog: per-SLR resources, shell IP placement, ports, clock, price.

The built-in table is data/cards.yaml (its header says where every number comes from); users add or
override card types with a YAML file of the same shape.
"""

from __future__ import annotations

from functools import cache
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from .errors import InputError
from .resources import RESOURCE_KINDS, Resources


class Limits(BaseModel):
    """Utilisation limits per SLR (fractions of the capacity left after shell IP)."""

    model_config = ConfigDict(extra="forbid")
    lut: float = Field(0.7, gt=0, le=1)
    ff: float = Field(0.5, gt=0, le=1)
    bram18: float = Field(0.8, gt=0, le=1)
    uram: float = Field(0.8, gt=0, le=1)
    dsp: float = Field(0.8, gt=0, le=1)
    memory_dsp_mean: float = Field(0.7, gt=0, le=1, description="mean(BRAM%, URAM%, DSP%) per SLR")

    def as_resources(self) -> Resources:
        return Resources(self.lut, self.ff, self.bram18, self.uram, self.dsp)


class IpCosts(BaseModel):
    ddr: list[float]
    hbm: list[float]
    eth: list[float]


class CardType(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    part: str
    slrs: list[list[float]] = Field(min_length=1)
    ddr_slrs: list[int] = []
    hbm_slr: int | None = None
    eth_slr: int
    sll_per_pair: int = Field(5000, gt=0)
    qsfp_ports: int = Field(2, ge=0)
    fclk_mhz: float = Field(200, gt=0)
    fclk_source: str = Field("modelled default", description="where fclk_mhz came from (shown in every plan)")
    build_clock_mhz: float | None = Field(None, gt=0, description="the clock its card builds are synthesised for, "
                                          "where fclk_mhz is what a build achieved (None: fclk_mhz)")
    resource_scale: dict[Literal[RESOURCE_KINDS], PositiveFloat] = Field(
        default_factory=dict, description="per resource kind: what builds of this type used / what the cost model "
        "estimated (build reports); plans divide the usable capacity by it")
    cost_per_hour: float = Field(1.65, ge=0)
    device_plugin_resources: list[str] = []
    board: str | None = Field(None, description="FINN board name (DataflowBuildConfig.board), e.g. U280")
    vitis_platform: str | None = Field(None, description="AMD Vitis platform the card's shell runs, e.g. "
                                                          "xilinx_u280_gen3x16_xdma_1_202211_1")

    @property
    def synth_clock_mhz(self) -> float:
        """The clock card builds of this type target (FINN's synth_clk_period_ns)."""
        return self.build_clock_mhz or self.fclk_mhz

    @field_validator("slrs")
    @classmethod
    def _five_resources(cls, slrs: list[list[float]]) -> list[list[float]]:
        for slr in slrs:
            Resources.from_list(slr)
        return slrs

    @model_validator(mode="after")
    def _slr_indices_exist(self) -> CardType:
        n = len(self.slrs)
        for field, values in (("ddr_slrs", self.ddr_slrs), ("eth_slr", [self.eth_slr]),
                              ("hbm_slr", [] if self.hbm_slr is None else [self.hbm_slr])):
            for v in values:
                if not 0 <= v < n:
                    raise ValueError(f"{field}={v} is not an SLR of this card (0..{n - 1})")
        return self

    @property
    def n_slrs(self) -> int:
        return len(self.slrs)

    @property
    def device_plugin_resource(self) -> str:
        return self.device_plugin_resources[0] if self.device_plugin_resources else f"amd.com/{self.name}"

    def shell_overhead(self, slr: int, ip: IpCosts) -> Resources:
        """DDR or HBM controller cost on this SLR (HBM replaces DDR where both are listed, as in FINN)."""
        if slr == self.hbm_slr:
            return Resources.from_list(ip.hbm)
        if slr in self.ddr_slrs:
            return Resources.from_list(ip.ddr)
        return Resources()

    def usable(self, slr: int, ip: IpCosts, limits: Limits, with_eth: bool) -> Resources:
        """Resources a design may use on one SLR: limit x (capacity - shell IP [- VNx stack])."""
        free = Resources.from_list(self.slrs[slr]) - self.shell_overhead(slr, ip)
        if with_eth and slr == self.eth_slr:
            free = free - Resources.from_list(ip.eth)
        calibrated = Resources(*(1.0 / self.resource_scale.get(kind, 1.0) for kind in RESOURCE_KINDS))
        return free.scale(limits.as_resources()).scale(calibrated)


class Catalog(BaseModel):
    ip_costs: IpCosts
    cards: dict[str, CardType]

    def card(self, name: str, field: str = "card type") -> CardType:
        try:
            return self.cards[name.lower()]
        except KeyError:
            raise InputError(field, f"unknown card type {name!r}", sorted(self.cards)) from None

    def by_device_plugin_resource(self) -> dict[str, str]:
        return {res: c.name for c in self.cards.values() for res in c.device_plugin_resources}


def _parse(document: object, source: str) -> dict:
    if not isinstance(document, dict):
        raise InputError(source, "expected a mapping with a 'cards' key")
    cards = document.get("cards", {})
    if not isinstance(cards, dict):
        raise InputError(f"{source}: cards", "expected a mapping of card name to card fields")
    return {"ip_costs": document.get("ip_costs"), "cards": cards}


def parse_yaml(text: str) -> object:
    """Safe YAML, parsed by libyaml where PyYAML was built with it: 30x faster than the pure-Python parser,
    which took ~40 ms of every CLI run for the card catalog alone."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _read_yaml(path: Path) -> object:
    try:
        return parse_yaml(path.read_text())
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except yaml.YAMLError as err:
        raise InputError(str(path), f"malformed YAML: {err}") from None


@cache
def _builtin() -> dict:
    text = importlib_resources.files(__package__).joinpath("data/cards.yaml").read_text()
    return _parse(parse_yaml(text), "cards.yaml")


def load_catalog(extra_yaml: str | Path | None = None) -> Catalog:
    """The built-in catalog, plus/overridden by the card types in `extra_yaml`."""
    data = _builtin()
    cards = {name: {"name": name, **fields} for name, fields in data["cards"].items()}
    ip_costs = data["ip_costs"]
    source = "cards.yaml"
    if extra_yaml is not None:
        source = str(extra_yaml)
        extra = _parse(_read_yaml(Path(extra_yaml)), source)
        for name, fields in extra["cards"].items():
            if not isinstance(fields, dict):
                raise InputError(f"{source}: cards.{name}", "expected a mapping of card fields")
            base = cards.get(name.lower(), {})
            if "fclk_mhz" in fields and "fclk_source" not in fields:
                fields = {**fields, "fclk_source": f"catalog override ({source})"}
            cards[name.lower()] = {**base, **fields, "name": name.lower()}
        ip_costs = extra["ip_costs"] or ip_costs
    try:
        return Catalog(ip_costs=ip_costs, cards=cards)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{source}: {where}", first["msg"]) from None


def with_clocks(catalog: Catalog, clocks: dict[str, float], source: str, built_at: float | None = None) -> Catalog:
    """The catalog with the kernel clock of some card types replaced: a clock to build for and plan with (a user
    override), or with `built_at` what builds synthesised for `built_at` MHz achieved (a build report: Vitis
    lowers the clock where timing does not close). Plans then run at the achieved clock while new builds keep
    targeting `built_at`, so a re-plan on a report reuses the builds it measured instead of making new ones."""
    cards = dict(catalog.cards)
    for name, mhz in clocks.items():
        card = catalog.card(name, "clock")
        if not mhz > 0:
            raise InputError(f"clock {name}", f"clock must be > 0 MHz, got {mhz}")
        cards[card.name] = card.model_copy(update={"fclk_mhz": float(mhz), "fclk_source": source,
                                                   "build_clock_mhz": built_at if built_at != mhz else None})
    return catalog.model_copy(update={"cards": cards})


def with_resource_scale(catalog: Catalog, scales: dict[str, dict[str, float]]) -> Catalog:
    """The catalog with what builds of some card types used / what the cost model estimated (build reports'
    resources, per kind): plans on those types count with capacity / ratio, as if every estimate were scaled."""
    cards = dict(catalog.cards)
    for name, ratios in scales.items():
        card = catalog.card(name, "resource scale")
        cards[card.name] = card.model_copy(update={"resource_scale": {**card.resource_scale, **ratios}})
    return catalog.model_copy(update={"cards": cards})
