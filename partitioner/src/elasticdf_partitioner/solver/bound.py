"""A proven upper bound on total fps.

Any instance whose slowest stage takes C cycles runs at most fclk/C fps and needs at least m_r(C) of every
resource r, where m_r(C) sums, over stages, the smallest amount of r among the options within C cycles.
So for every r: total fps <= usable_r x max_C fclk / (C x m_r(C)). We take the best C for each r separately
(a sweep over all option cycle values) and the smallest of the resulting per-resource bounds.
"""

from __future__ import annotations

import math

from ..resources import Resources
from .stages import Pipeline


def fps_per_resource(pipeline: Pipeline, fclk_mhz: float) -> Resources:
    """For each resource kind, the most fps one unit of it can buy at any folding."""
    if fclk_mhz not in pipeline.ratios:
        pipeline.ratios[fclk_mhz] = _sweep(pipeline, fclk_mhz)
    return pipeline.ratios[fclk_mhz]


def _sweep(pipeline: Pipeline, fclk_mhz: float) -> Resources:
    events = sorted((o.cycles, s, o.res) for s, stage in enumerate(pipeline.stages) for o in stage.options)
    n = len(pipeline.stages)
    best_min: list[list[float]] = [[math.inf] * 5 for _ in range(n)]
    missing = n
    total = [0.0] * 5
    ratio = [0.0] * 5
    i = 0
    while i < len(events):
        cycles = events[i][0]
        while i < len(events) and events[i][0] == cycles:
            _, s, res = events[i]
            if best_min[s][0] == math.inf:
                missing -= 1
                for k in range(5):
                    best_min[s][k] = res[k]
                    total[k] += res[k]
            else:
                for k in range(5):
                    if res[k] < best_min[s][k]:
                        total[k] -= best_min[s][k] - res[k]
                        best_min[s][k] = res[k]
            i += 1
        if missing == 0:
            fps = fclk_mhz * 1e6 / cycles
            for k in range(5):
                ratio[k] = max(ratio[k], fps / total[k] if total[k] > 1e-12 else math.inf)
    return Resources(*ratio)


def fps_bound(pipeline: Pipeline, usable: Resources, fclk_mhz: float) -> float:
    ratios = fps_per_resource(pipeline, fclk_mhz)
    return min((u * r for u, r in zip(usable, ratios) if r < math.inf), default=math.inf)
