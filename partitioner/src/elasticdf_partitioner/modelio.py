"""Load a user's model file into a ModelGraph, the format detected from its content (not its name).

- FINN dataflow ONNX (a node in domain finn.custom_op.fpgadataflow[.hls|.rtl]) -> finn_io.import_onnx;
- QONNX (a node in domain qonnx.custom_op.general, or a Quant / BipolarQuant / Trunc node) -> qonnx_import;
- anything else, or bytes that are no ONNX model: ModelError(ModelInvalid) naming the first offending node.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from .artifacts import MODEL_INVALID, ONNX_FIELD, ModelError
from .errors import InputError
from .finn_io import DATAFLOW_DOMAIN, import_onnx
from .graph import ModelGraph

QONNX_DOMAIN = "qonnx.custom_op.general"
QONNX_OPS = ("Quant", "BipolarQuant", "Trunc")
SUPPORTED = (f"FINN dataflow ONNX (nodes in domain {DATAFLOW_DOMAIN}[.hls|.rtl]) or QONNX (nodes in domain "
             f"{QONNX_DOMAIN}: {', '.join(QONNX_OPS)} with standard ONNX ops)")


def is_finn_dataflow(model: onnx.ModelProto) -> bool:
    return any(n.domain == DATAFLOW_DOMAIN or n.domain.startswith(DATAFLOW_DOMAIN + ".") for n in model.graph.node)


def is_qonnx(model: onnx.ModelProto) -> bool:
    return any(n.domain.startswith(QONNX_DOMAIN) or n.op_type in QONNX_OPS for n in model.graph.node)


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """The ONNX model in `path`, or ModelInvalid "not an ONNX model"."""
    try:
        model = onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError and friends for any garbage
        raise ModelError(MODEL_INVALID, ONNX_FIELD, f"not an ONNX model ({type(err).__name__}: {err})") from None
    if model.ir_version <= 0 or not model.graph.node:
        raise ModelError(MODEL_INVALID, ONNX_FIELD, "not an ONNX model (no IR version or no graph nodes)")
    return model


def load_model(path: str | Path, name: str | None = None) -> ModelGraph:
    """The layer graph of the model file at `path` (FINN dataflow ONNX or QONNX)."""
    model = read_onnx(path)
    name = name or model.graph.name or Path(path).stem
    try:
        if is_finn_dataflow(model):
            return import_onnx(model, name)
        if is_qonnx(model):
            return _import_qonnx(model, name)
    except ModelError:
        raise
    except InputError as err:
        raise ModelError(MODEL_INVALID, ONNX_FIELD, str(err)) from None
    first = model.graph.node[0]
    raise ModelError(MODEL_INVALID, ONNX_FIELD, f"node {first.name or first.output[0]!r} (op {first.op_type}, domain "
                     f"{first.domain or 'ai.onnx'}) is neither a FINN dataflow nor a QONNX node", SUPPORTED)


def _import_qonnx(model: onnx.ModelProto, name: str) -> ModelGraph:
    try:
        from .qonnx_import import import_qonnx
    except ImportError:
        raise ModelError(MODEL_INVALID, ONNX_FIELD, "QONNX import is not available in this version",
                         f"FINN dataflow ONNX (nodes in domain {DATAFLOW_DOMAIN})") from None
    graph = import_qonnx(model)
    graph.name = name
    return graph
