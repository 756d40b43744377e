"""FINN dataflow ops, one module per op family (cost model, FINN import/export, emulation lowering), and the
FINN op-type registry.

`FINN_OP_TYPES` maps every FINN op type we understand — FINN v0.6 names (2021, the Elastic-DF paper era) and
today's `_hls`/`_rtl` names, as each op class lists them — to one canonical op class. `op_class()` resolves
a FINN op type and raises an InputError naming the node and listing the allowed op types for anything else.
"""

from __future__ import annotations

from ..errors import InputError
from .base import FinnLayer, divisors
from .channelwise import ChannelwiseOp
from .dwc import StreamingDataWidthConverter
from .fifo import StreamingFIFO
from .labelselect import LabelSelect
from .mvau import MVAU, ConvDoublePacked
from .pool import Pool, StreamingMaxPool
from .resample import DownSampler, FMPadding, FMPaddingPixel
from .streams import AddStreams, DuplicateStreams
from .swg import ConvolutionInputGenerator
from .thresholding import Thresholding
from .upsample import UpsampleNearestNeighbour
from .vvau import VVAU

OP_CLASSES: dict[str, type[FinnLayer]] = {cls.op: cls for cls in (
    MVAU, ConvDoublePacked, VVAU, ConvolutionInputGenerator, Thresholding, StreamingFIFO, AddStreams,
    DuplicateStreams, DownSampler, FMPadding, FMPaddingPixel, Pool, ChannelwiseOp, LabelSelect,
    StreamingDataWidthConverter, StreamingMaxPool, UpsampleNearestNeighbour,
)}

# FINN op type (v0.6, today's generic and specialised _hls/_rtl names) -> canonical op
FINN_OP_TYPES: dict[str, str] = {finn: cls.op for cls in OP_CLASSES.values() for finn in cls.finn_op_types}


def canonical_op(op_type: str, node: str = "node") -> str:
    """Our op name for a FINN op type (or for one of our own op names)."""
    if op_type in OP_CLASSES:
        return op_type
    try:
        return FINN_OP_TYPES[op_type]
    except KeyError:
        raise InputError(f"{node}: op_type", f"unknown FINN op type {op_type!r}", sorted(FINN_OP_TYPES)) from None


def op_class(op_type: str, node: str = "node") -> type[FinnLayer]:
    return OP_CLASSES[canonical_op(op_type, node)]


__all__ = [
    "FINN_OP_TYPES", "OP_CLASSES", "AddStreams", "ChannelwiseOp", "ConvDoublePacked", "ConvolutionInputGenerator",
    "DownSampler", "DuplicateStreams", "FMPadding", "FMPaddingPixel", "FinnLayer", "LabelSelect", "MVAU", "Pool",
    "StreamingDataWidthConverter", "StreamingFIFO", "StreamingMaxPool", "Thresholding", "UpsampleNearestNeighbour",
    "VVAU", "canonical_op",
    "divisors", "op_class",
]
