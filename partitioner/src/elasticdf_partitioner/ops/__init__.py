"""FINN dataflow op cost models, one module per op family, and the FINN op-type registry.

`FINN_OP_TYPES` maps every FINN op type we understand — FINN v0.6 names (2021, the Elastic-DF paper era) and
today's `_hls`/`_rtl` names — to one canonical op class. `op_class()` resolves a FINN op type and raises an
InputError naming the node and listing the allowed op types for anything else.
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
from .resample import DownSampler, FMPadding
from .streams import AddStreams, DuplicateStreams
from .swg import ConvolutionInputGenerator
from .thresholding import Thresholding
from .vvau import VVAU

OP_CLASSES: dict[str, type[FinnLayer]] = {cls.op: cls for cls in (
    MVAU, ConvDoublePacked, VVAU, ConvolutionInputGenerator, Thresholding, StreamingFIFO, AddStreams,
    DuplicateStreams, DownSampler, FMPadding, Pool, ChannelwiseOp, LabelSelect, StreamingDataWidthConverter,
    StreamingMaxPool,
)}

# FINN op type -> canonical op. Column 1: FINN v0.6; then today's generic and specialised (_hls/_rtl) names.
FINN_OP_TYPES: dict[str, str] = {
    **dict.fromkeys(("StreamingFCLayer_Batch", "MatrixVectorActivation", "MVAU", "MVAU_hls", "MVAU_rtl"), "MVAU"),
    **dict.fromkeys(("ConvDoublePacked_Batch",), "ConvDoublePacked"),
    **dict.fromkeys(("Vector_Vector_Activate_Batch", "VectorVectorActivation", "VVAU", "VVAU_hls", "VVAU_rtl"),
                    "VVAU"),
    **dict.fromkeys(("ConvolutionInputGenerator", "ConvolutionInputGenerator_hls",
                     "ConvolutionInputGenerator_rtl"), "ConvolutionInputGenerator"),
    **dict.fromkeys(("Thresholding_Batch", "Thresholding", "Thresholding_hls", "Thresholding_rtl"),
                    "Thresholding"),
    **dict.fromkeys(("StreamingFIFO", "StreamingFIFO_rtl"), "StreamingFIFO"),
    **dict.fromkeys(("AddStreams_Batch", "AddStreams", "AddStreams_hls"), "AddStreams"),
    **dict.fromkeys(("DuplicateStreams_Batch", "DuplicateStreams", "DuplicateStreams_hls"), "DuplicateStreams"),
    **dict.fromkeys(("DownSampler", "DownSampler_hls"), "DownSampler"),
    **dict.fromkeys(("FMPadding_Batch", "FMPadding", "FMPadding_hls", "FMPadding_rtl"), "FMPadding"),
    **dict.fromkeys(("Pool_Batch", "Pool", "Pool_hls"), "Pool"),
    **dict.fromkeys(("ChannelwiseOp_Batch", "ChannelwiseOp", "ChannelwiseOp_hls"), "ChannelwiseOp"),
    **dict.fromkeys(("LabelSelect_Batch", "LabelSelect", "LabelSelect_hls"), "LabelSelect"),
    **dict.fromkeys(("StreamingDataWidthConverter_Batch", "StreamingDataWidthConverter",
                     "StreamingDataWidthConverter_hls", "StreamingDataWidthConverter_rtl"),
                    "StreamingDataWidthConverter"),
    **dict.fromkeys(("StreamingMaxPool_Batch", "StreamingMaxPool", "StreamingMaxPool_hls"), "StreamingMaxPool"),
}


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
    "DownSampler", "DuplicateStreams", "FMPadding", "FinnLayer", "LabelSelect", "MVAU", "Pool",
    "StreamingDataWidthConverter", "StreamingFIFO", "StreamingMaxPool", "Thresholding", "VVAU", "canonical_op",
    "divisors", "op_class",
]
