"""From a model reference to a model onnxruntime runs: what the segment runtime and `elasticdf emulate` execute.

A reference is a zoo URI (`zoo://resnet50`) or zoo name, or a local ONNX file: a FINN dataflow model, a QONNX
model (Brevitas export), or an already standard ONNX model. Zoo models are exported with seeded weights, so
every segment of every instance builds the same network without shipping it. The result carries the range of
its input values as metadata (`elasticdf.input_range`, "lo,hi") for tools that make test frames.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

from .errors import InputError
from .finn_node import DATAFLOW_DOMAIN, DataType
from .zoo import ZOO_SCHEME, zoo_entry

ZOO_SEED = 0  # the weights every zoo deployment runs with (random, deterministic)
INPUT_RANGE_KEY = "elasticdf.input_range"


def is_dataflow(model: onnx.ModelProto) -> bool:
    return any(n.domain == DATAFLOW_DOMAIN or n.domain.startswith(DATAFLOW_DOMAIN + ".") for n in model.graph.node)


def is_qonnx(model: onnx.ModelProto) -> bool:
    return any(n.domain.startswith("qonnx.") or n.op_type in ("Quant", "BipolarQuant", "Trunc")
               for n in model.graph.node)


def dataflow_model(reference: str, seed: int = ZOO_SEED) -> onnx.ModelProto | None:
    """The FINN dataflow ONNX of a reference, or None for a standard ONNX file (nothing to lower)."""
    from .finn_io import export_finn

    if reference.startswith(ZOO_SCHEME) or not reference.lower().endswith(".onnx"):
        return export_finn(zoo_entry(reference.removeprefix(ZOO_SCHEME), "model").build(), seed)
    model = _load(reference)
    if is_dataflow(model):
        return model
    if is_qonnx(model):
        from .qonnx_import import import_qonnx

        return import_qonnx(model)
    return None


def runnable_model(reference: str, seed: int = ZOO_SEED) -> onnx.ModelProto:
    """A standard ONNX model (opset 17, float32 tensors holding exact integers) for the reference."""
    from .emulation import lower_model

    dataflow = dataflow_model(reference, seed)
    if dataflow is None:
        return _load(reference)
    lowered = lower_model(dataflow)
    low, high = _input_range(dataflow)
    helper.set_model_props(lowered, {**{p.key: p.value for p in lowered.metadata_props},
                                     INPUT_RANGE_KEY: f"{low},{high}"})
    return lowered


def _input_range(dataflow: onnx.ModelProto) -> tuple[int, int]:
    """The value range of the first layer's input datatype (FINN attribute `inputDataType`)."""
    graph_input = dataflow.graph.input[0].name
    for node in dataflow.graph.node:
        if graph_input in node.input:
            for attr in node.attribute:
                if attr.name in ("inputDataType", "dataType"):
                    datatype = DataType.parse(helper.get_attribute_value(attr).decode())
                    return int(datatype.min), int(datatype.max)
    return 0, 255


def _load(path: str) -> onnx.ModelProto:
    local = Path(path.removeprefix("file://"))
    if not local.is_file():
        raise InputError("model", f"ONNX file {path!r} not found")
    try:
        return onnx.load(str(local))
    except Exception as err:  # onnx raises DecodeError and friends for garbage input
        raise InputError(str(local), f"not an ONNX model: {err}") from None
