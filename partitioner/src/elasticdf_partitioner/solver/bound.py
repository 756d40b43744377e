"""A proven upper bound on total fps.

Any instance whose slowest stage takes C cycles runs at most fclk/C fps and needs at least m_r(C) of every
resource r, where m_r(C) sums, over stages, the smallest amount of r among the options within C cycles.
So for every r: total fps <= usable_r x max_C fclk / (C x m_r(C)). We take the best C for each r separately
(a sweep over all option cycle values) and the smallest of the resulting per-resource bounds.
"""

from __future__ import annotations

import math

import numpy as np

from ..resources import Resources
from .stages import Pipeline


def fps_per_resource(pipeline: Pipeline, fclk_mhz: float) -> Resources:
    """For each resource kind, the most fps one unit of it can buy at any folding."""
    if fclk_mhz not in pipeline.ratios:
        pipeline.ratios[fclk_mhz] = _sweep(pipeline, fclk_mhz)
    return pipeline.ratios[fclk_mhz]


def _sweep(pipeline: Pipeline, fclk_mhz: float) -> Resources:
    """Per resource, the best fps per unit over every level C (an option's cycle count) at which every stage
    has an option: fclk / C over the least of the resource an instance of level C uses."""
    levels, totals = pipeline.least_totals()
    fps = np.broadcast_to((fclk_mhz * 1e6 / levels)[:, None], totals.shape)
    ratios = np.divide(fps, totals, out=np.full(totals.shape, math.inf), where=totals > 1e-12)
    return Resources(*ratios.max(axis=0, initial=0.0).tolist())


def fps_bound(pipeline: Pipeline, usable: Resources, fclk_mhz: float) -> float:
    ratios = fps_per_resource(pipeline, fclk_mhz)
    return min((u * r for u, r in zip(usable, ratios) if r < math.inf), default=math.inf)
