"""Cut a general (non-FINN) ONNX model by layer range.

The partitioner's `finn_io.segment_models` only understands FINN dataflow nodes. For plain ONNX models (the
emulation path, test models) a *layer* is a group of nodes sharing the name prefix before the first "/"
("conv0/Conv", "conv0/Round", "conv0/Clip" form layer "conv0"); nodes without "/" are a layer each. Layers are
numbered in order of first appearance (ONNX files are topologically sorted), which matches the partitioner's
index for FINN models where every node is one layer.

A segment must receive exactly one tensor and produce exactly one: the frame protocol carries one tensor per
request, and a cut through a residual branch (two live tensors) would need two.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from elasticdf_partitioner.artifacts import FetchPolicy, ModelError, fetch
from onnx import helper


def layer_of(node: onnx.NodeProto) -> str:
    return node.name.split("/", 1)[0] if node.name else node.output[0]


def layer_names(model: onnx.ModelProto) -> list[str]:
    return list(dict.fromkeys(layer_of(n) for n in model.graph.node))


def cut(model: onnx.ModelProto, first: int, last: int) -> onnx.ModelProto:
    """The sub-model of layers first..last (inclusive) with one input and one output tensor."""
    names = layer_names(model)
    if not 0 <= first <= last < len(names):
        raise ValueError(f"layer range [{first}, {last}] outside the model's {len(names)} layers")
    inside_layers = set(names[first:last + 1])
    inside = [n for n in model.graph.node if layer_of(n) in inside_layers]
    after = [n for n in model.graph.node if names.index(layer_of(n)) > last]
    initializers = {i.name for i in model.graph.initializer}
    produced = {t for n in inside for t in n.output}
    inputs = list(dict.fromkeys(t for n in inside for t in n.input
                                if t and t not in produced and t not in initializers))
    graph_outputs = {o.name for o in model.graph.output}
    needed_later = {t for n in after for t in n.input} | graph_outputs
    outputs = [t for t in dict.fromkeys(t for n in inside for t in n.output) if t in needed_later]
    where = f"layers [{first}, {last}] ({names[first]}..{names[last]})"
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{where}: a segment needs one input and one output tensor, got inputs {inputs} and "
                         f"outputs {outputs}; cut at a layer boundary outside residual branches")
    shaped = onnx.shape_inference.infer_shapes(model)
    info = {v.name: v for v in [*shaped.graph.input, *shaped.graph.value_info, *shaped.graph.output]}
    used = {t for n in inside for t in n.input}
    graph = helper.make_graph(
        [_copy(n) for n in inside], f"{model.graph.name}_layers{first}_{last}",
        [info.get(inputs[0]) or helper.make_empty_tensor_value_info(inputs[0])],
        [info.get(outputs[0]) or helper.make_empty_tensor_value_info(outputs[0])],
        initializer=[i for i in model.graph.initializer if i.name in used])
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def split(model: onnx.ModelProto, ranges: list[list[int]]) -> list[onnx.ModelProto]:
    return [cut(model, first, last) for first, last in ranges]


def local_path(uri: str, sha256: str | None = None) -> str:
    """A plain path as it is (mounted or baked into the image); a URI fetched with the operator's policy
    (elasticdf_partitioner.artifacts, configured by the ELASTICDF_MODEL_* variables the operator sets)."""
    if "://" not in uri:
        return str(Path(uri))
    try:
        return str(fetch(uri, sha256, FetchPolicy.from_env()))
    except ModelError as err:
        raise ValueError(str(err)) from None


def load(uri: str, sha256: str | None = None) -> onnx.ModelProto:
    return onnx.load(local_path(uri, sha256))
