"""Zoo validation: published-folding cycles and fps vs finn-examples' measurements, resource totals vs card
capacity, option counts and the time to build every layer's options.

Run: .venv/bin/python benchmarks/zoo_validation.py   (writes benchmarks/results/zoo_validation.md)
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from elasticdf_partitioner.catalog import Limits, load_catalog
from elasticdf_partitioner.cli import usable_capacity
from elasticdf_partitioner.ops import base as ops_base
from elasticdf_partitioner.resources import RESOURCE_KINDS, Resources
from elasticdf_partitioner.zoo import ZOO, load_model, predicted_fps

OUT = Path(__file__).parent / "results" / "zoo_validation.md"
# finn-examples' ResNet-50 floorplan call used raised per-SLR limits (reference §1.6)
FINN_RN50_LIMITS = [Limits(lut=0.75, ff=0.5, bram18=0.7, uram=0.6, dsp=0.6)] + [
    Limits(lut=1.0, ff=0.7, bram18=0.9, uram=0.8, dsp=0.8)] * 3


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pct(used: Resources, cap: Resources) -> list[str]:
    return [f"{u / c:.0%}" if c else "-" for u, c in zip(used, cap)]


def lut_cheapest_variants(model) -> Resources:
    """Total at the published folding when every layer takes its lowest-LUT variant (e.g. DSP multipliers)."""
    total = Resources()
    for layer in model.layers:
        folding = dict(layer.current().folding)
        same = [layer.option(folding, v) for v in layer.variants(folding)]
        total = total + min(same, key=lambda o: (o.res.lut, o.res.bram18)).res
    return total


def main() -> None:
    catalog = load_catalog()
    sections = ["# Zoo validation (FINN v0.6 cost model, published folding)\n"]

    rows = []
    models = {name: load_model(name) for name in sorted(ZOO)}
    for name, model in models.items():
        m = ZOO[name].measured
        bottleneck = max(model.layers, key=lambda layer: layer.current().cycles)
        compute = [layer.current().cycles for layer in model.layers if layer.op in ("MVAU", "VVAU", "ConvDoublePacked")]
        row = [name, str(len(model.layers)), f"{model.max_cycles():,}", bottleneck.name, f"{max(compute):,}"]
        if m:
            fps = predicted_fps(model, m.fclk_mhz)
            row += [f"{m.fclk_mhz:g}", f"{fps:,.1f}", f"{m.fps:,.1f}", f"{(fps - m.fps) / m.fps:+.1%}"]
        else:
            row += ["-", "-", "-", "-"]
        rows.append(row)
    sections.append("## Cycles and throughput\n")
    sections.append(table(["model", "layers", "max cycles", "bottleneck layer", "max MVAU/VVAU cycles", "fclk MHz",
                           "predicted fps", "measured fps", "error"], rows))
    sections.append("\nMobileNetV1: FINN v0.6's SWG formula adds the line-buffer fill (IFM·K·C/SIMD = 672 cycles) to "
                    "the first conv's window generator, so the bottleneck is 111,561 cycles, 0.6% above the "
                    "MVAU/VVAU maximum of 110,889 that reference §6.1 lists.\n")

    sections.append("## Total resources vs one card (default limits, after shell IP, no VNx stack)\n")
    rows = []
    for name, model in models.items():
        total = model.total_resources()
        rows.append([name, "total", *(f"{int(v):,}" for v in total)])
        for card in ("u250", "u280"):
            cap = usable_capacity(catalog.card(card), catalog)
            rows.append([name, f"{card} usable {', '.join(f'{int(v):,}' for v in cap)}", *pct(total, cap)])
    sections.append(table(["model", "row", *(k.upper() for k in RESOURCE_KINDS)], rows))

    u250 = catalog.card("u250")
    raised = Resources()
    for slr, limits in enumerate(FINN_RN50_LIMITS):
        raised = raised + u250.usable(slr, catalog.ip_costs, limits, with_eth=False)
    rn50 = models["resnet50"].total_resources()
    sections.append("\nResNet-50 vs U250 with the raised per-SLR limits finn-examples used (SLR0 0.75/0.5/0.7/0.6/0.6, "
                    "SLR1-3 1.0/0.7/0.9/0.8/0.8): capacity " + ", ".join(f"{int(v):,}" for v in raised) + " -> "
                    + ", ".join(f"{k.upper()} {p}" for k, p in zip(RESOURCE_KINDS, pct(rn50, raised))) + ".\n")

    mnv1 = models["mobilenetv1"]
    multi = Resources()
    for slr in range(catalog.card("u280").n_slrs):
        multi = multi + catalog.card("u280").usable(slr, catalog.ip_costs, Limits(), with_eth=True)
    lines = ["## MobileNetV1 instances on 2 x U280 (aggregate bound, multi-card capacity incl. VNx stack)\n"]
    for label, total in (("published variants", mnv1.total_resources()),
                         ("lowest-LUT variant per layer, same folding", lut_cheapest_variants(mnv1))):
        fit = min(2 * c // u for u, c in zip(total, multi) if u)
        lines.append(f"- {label}: LUT {int(total.lut):,}, BRAM18 {int(total.bram18):,}, URAM {int(total.uram):,}, "
                     f"DSP {int(total.dsp):,} -> at most {int(fit)} instances on 2 x U280 by aggregate capacity")
    sections.append("\n".join(lines) + "\n")

    rows = []
    for name in sorted(ZOO):
        ops_base._OPTIONS_CACHE.clear()
        model = load_model(name)
        start = time.perf_counter()
        counts = [len(layer.options()) for layer in model.layers]
        elapsed = time.perf_counter() - start
        rows.append([name, str(len(counts)), str(sum(counts)), str(max(counts)), f"{statistics.median(counts):g}",
                     f"{elapsed * 1000:.0f}"])
    sections.append("## Options per layer (cold cache)\n")
    sections.append(table(["model", "layers", "options", "max per layer", "median", "build ms"], rows))

    text = "\n".join(sections) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
