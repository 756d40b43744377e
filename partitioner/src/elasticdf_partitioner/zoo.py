"""The built-in model zoo: FINN's published accelerators with their published folding.

Each entry builds a fresh ModelGraph (callers may change its settings). Measured numbers are finn-examples'
single-card notebook results (reference §2.2); they are kept here only to validate the cost model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import InputError
from .graph import ModelGraph
from .models.cnv import build_cnv
from .models.mobilenetv1 import build_mobilenetv1
from .models.resnet50 import build_resnet50


@dataclass(frozen=True)
class Measurement:
    fps: float
    fclk_mhz: float
    card: str
    source: str


@dataclass(frozen=True)
class ZooEntry:
    name: str
    summary: str
    build: Callable[[], ModelGraph]
    measured: Measurement | None = None


ZOO: dict[str, ZooEntry] = {
    "resnet50": ZooEntry(
        "resnet50", "ResNet-50 w1a2 (ImageNet), FINN 2021 U250 build",
        build_resnet50,
        Measurement(2972.5, 178.0, "u250", "finn-examples 2_imagenet_with_cnns.ipynb (tag rn50-u250), batch 100"),
    ),
    "mobilenetv1": ZooEntry(
        "mobilenetv1", "MobileNetV1 w4a4 (ImageNet), FINN 2021 Alveo build",
        build_mobilenetv1,
        Measurement(1813.1, 206.0, "u250", "finn-examples 2_imagenet_with_mobilenet_v1.ipynb (v0.0.1b), batch 1000"),
    ),
    "cnv": ZooEntry("cnv", "CNV w1a1 (CIFAR-10, BNN-PYNQ), small test network", build_cnv),
}


def zoo_names() -> list[str]:
    return sorted(ZOO)


def zoo_entry(name: str, field: str = "model") -> ZooEntry:
    try:
        return ZOO[name.lower()]
    except KeyError:
        raise InputError(field, f"unknown zoo model {name!r}", zoo_names()) from None


ZOO_SCHEME = "zoo://"


def zoo_uri(name: str) -> str:
    """The artifact URI of a zoo model: segment runtimes build its dataflow ONNX (seeded weights) themselves."""
    return ZOO_SCHEME + name.lower()


def load_model(name: str) -> ModelGraph:
    """A fresh graph of zoo model `name` with its published folding applied."""
    return zoo_entry(name).build()


def predicted_fps(model: ModelGraph, fclk_mhz: float) -> float:
    """Single-pipeline throughput: f_clk / max cycles per frame (FINN's dataflow model)."""
    return fclk_mhz * 1e6 / model.max_cycles()
