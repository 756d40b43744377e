"""ChannelwiseOp (FINN `ChannelwiseOp_Batch` v0.6, `ChannelwiseOp_hls` today): per-channel add/mul with
parameters in memory. Same v0.6 estimates as Thresholding (reference §3.2): cycles = N_vec·C/P,
LUT = A·P (+ P·A·ceil(TMEM/64) distributed), BRAM18 = ceil(A·P/16)·ceil(TMEM/1024) (block), TMEM = C/P.
Variants: ram_style distributed (FINN default) | block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .thresholding import Thresholding


@dataclass(eq=False)
class ChannelwiseOp(Thresholding):
    op: ClassVar[str] = "ChannelwiseOp"
