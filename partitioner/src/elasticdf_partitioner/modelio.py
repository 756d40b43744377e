"""A user's model file, the format detected from its content (not its name): as a ModelGraph to plan, and as
a standard ONNX model to run (what the segment runtime and `elasticdf emulate` execute).

- FINN dataflow ONNX (a node in domain finn.custom_op.fpgadataflow[.hls|.rtl]) -> finn_io.import_onnx;
- QONNX (a node in domain qonnx.custom_op.general, or a Quant / BipolarQuant / Trunc node) -> qonnx_import,
  which turns it into FINN dataflow ONNX;
- anything else, or bytes that are no ONNX model: ModelError(ModelInvalid) naming the first offending node.

To run, a model reference is a zoo URI (`zoo://resnet50`) or zoo name, or a local ONNX file (FINN dataflow,
QONNX, or already standard ONNX). Zoo models are exported with seeded weights, so every segment of every
instance builds the same network without shipping it. The runnable model carries the range of its input
values as metadata (`elasticdf.input_range`, "lo,hi") for tools that make test frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .finn_node import DATAFLOW_DOMAIN, DataType
from .graph import ModelGraph
from .zoo import ZOO_SCHEME, zoo_entry

if TYPE_CHECKING:
    import onnx

    from .artifacts import ModelError

# onnx, the fetcher (urllib3) and the FINN importer are imported where a model file is read: planning a zoo
# model needs none of them, and they cost a CLI run a few hundred ms

QONNX_DOMAIN = "qonnx.custom_op.general"
QONNX_OPS = ("Quant", "BipolarQuant", "Trunc")
ZOO_SEED = 0  # the weights every zoo deployment runs with (random, deterministic)
INPUT_RANGE_KEY = "elasticdf.input_range"
SUPPORTED = (f"FINN dataflow ONNX (nodes in domain {DATAFLOW_DOMAIN}[.hls|.rtl]) or QONNX (nodes in domain "
             f"{QONNX_DOMAIN}: {', '.join(QONNX_OPS)} with standard ONNX ops)")


def is_finn_dataflow(model: onnx.ModelProto) -> bool:
    return any(n.domain == DATAFLOW_DOMAIN or n.domain.startswith(DATAFLOW_DOMAIN + ".") for n in model.graph.node)


def is_qonnx(model: onnx.ModelProto) -> bool:
    return any(n.domain.startswith(QONNX_DOMAIN) or n.op_type in QONNX_OPS for n in model.graph.node)


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """The ONNX model in `path`, or ModelInvalid "not an ONNX model"."""
    import onnx

    from .artifacts import MODEL_INVALID, ONNX_FIELD, ModelError

    try:
        model = onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError and friends for any garbage
        raise ModelError(MODEL_INVALID, ONNX_FIELD, f"not an ONNX model ({type(err).__name__}: {err})") from None
    if model.ir_version <= 0 or not model.graph.node:
        raise ModelError(MODEL_INVALID, ONNX_FIELD, "not an ONNX model (no IR version or no graph nodes)")
    return model


def load_model(path: str | Path, name: str | None = None) -> ModelGraph:
    """The layer graph of the model file at `path` (FINN dataflow ONNX or QONNX)."""
    from .artifacts import MODEL_INVALID, ONNX_FIELD, ModelError
    from .finn_io import import_onnx

    model = read_onnx(path)
    name = name or model.graph.name or Path(path).stem
    try:
        dataflow = _as_dataflow(model)
        if dataflow is None:
            raise _unsupported_format(model)
        return import_onnx(dataflow, name)
    except ModelError:
        raise
    except InputError as err:
        raise ModelError(MODEL_INVALID, ONNX_FIELD, str(err)) from None


def _unsupported_format(model: onnx.ModelProto) -> ModelError:
    """Why a model is neither FINN dataflow nor QONNX: the first node of a foreign domain (e.g. Brevitas'
    FloatQuant), else the model is plain float ONNX that no quantizer turns into integers."""
    from .artifacts import MODEL_INVALID, ONNX_FIELD, ModelError

    foreign = next((n for n in model.graph.node if n.domain not in ("", "ai.onnx")), None)
    if foreign is not None:
        return ModelError(MODEL_INVALID, ONNX_FIELD, f"node {foreign.name or foreign.output[0]!r} (op "
                          f"{foreign.op_type}, domain {foreign.domain}) is neither a FINN dataflow nor a QONNX node",
                          SUPPORTED)
    first = model.graph.node[0]
    return ModelError(MODEL_INVALID, ONNX_FIELD, f"node {first.name or first.output[0]!r} (op {first.op_type}, "
                      "domain ai.onnx) is neither a FINN dataflow nor a QONNX node, and no node of the model quantizes "
                      "it: an unquantized float network, which FINN cannot map to integer hardware (export it with "
                      "Brevitas quantizers as QONNX)", SUPPORTED)


def model_graph(reference: str) -> ModelGraph:
    """The layer graph of a zoo name or of a model file (`*.onnx`, FINN dataflow or QONNX)."""
    if reference.lower().endswith(".onnx"):
        path = Path(reference.removeprefix("file://"))
        return load_model(path, path.stem)
    return zoo_entry(reference.removeprefix(ZOO_SCHEME), "model").build()


def _as_dataflow(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The FINN dataflow form of a FINN or QONNX model; None for any other model."""
    if is_finn_dataflow(model):
        return model
    if is_qonnx(model):
        from .qonnx_import import import_qonnx

        return import_qonnx(model)
    return None


# ---------------------------------------------------------------------------------------------------------
# runnable models


def fetched_reference(reference: str, sha256: str | None = None) -> str:
    """A zoo reference or a plain path as it is; a URI fetched (and its digest checked) with the fetch policy of
    the environment (the ELASTICDF_MODEL_* variables the operator sets on card pods and builder Jobs)."""
    from .artifacts import FetchPolicy, fetch

    if reference.startswith(ZOO_SCHEME) or "://" not in reference:
        return reference
    return str(fetch(reference, sha256, FetchPolicy.from_env()))


def dataflow_model(reference: str, seed: int = ZOO_SEED) -> onnx.ModelProto | None:
    """The FINN dataflow ONNX of a reference, or None for a standard ONNX file (nothing to lower)."""
    from .finn_io import export_finn

    if reference.startswith(ZOO_SCHEME) or not reference.lower().endswith(".onnx"):
        return export_finn(zoo_entry(reference.removeprefix(ZOO_SCHEME), "model").build(), seed)
    return _as_dataflow(read_onnx(reference.removeprefix("file://")))


def runnable_model(reference: str, seed: int = ZOO_SEED) -> onnx.ModelProto:
    """A standard ONNX model (opset 17, float tensors holding exact integers) for the reference."""
    from onnx import helper

    from .emulation import lower_model

    dataflow = dataflow_model(reference, seed)
    if dataflow is None:
        return read_onnx(reference.removeprefix("file://"))
    lowered = lower_model(dataflow)
    low, high = _input_range(dataflow)
    helper.set_model_props(lowered, {**{p.key: p.value for p in lowered.metadata_props},
                                     INPUT_RANGE_KEY: f"{low},{high}"})
    return lowered


def _input_range(dataflow: onnx.ModelProto) -> tuple[int, int]:
    """The value range of the first layer's input datatype (FINN attribute `inputDataType`)."""
    from onnx import helper

    graph_input = dataflow.graph.input[0].name
    for node in dataflow.graph.node:
        if graph_input in node.input:
            for attr in node.attribute:
                if attr.name in ("inputDataType", "dataType"):
                    datatype = DataType.parse(helper.get_attribute_value(attr).decode())
                    return int(datatype.min), int(datatype.max)
    return 0, 255
