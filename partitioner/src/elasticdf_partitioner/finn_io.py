"""FINN file formats: dataflow ONNX import and export, folding-config JSON read/write, per-segment ONNX export.

Import reads a FINN *dataflow* model (the child of `create_dataflow_partition`, or a whole model made only of
fpgadataflow nodes): every node must be in domain `finn.custom_op.fpgadataflow` (or its `.hls`/`.rtl`
sub-domains) with an op type from `ops.FINN_OP_TYPES` (FINN v0.6 and today's names); each op class reads its
own node (`from_finn`). Shell plumbing nodes (IODMA, TLastMarker) are bypassed: their consumers are wired to
their producers. Edges come from tensor names; nodes are sorted topologically (stable in file order). Anything
malformed raises InputError naming the file, node and attribute.

Export (`export_finn`) writes a ModelGraph as such a dataflow model, with seeded weights and thresholds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .finn_node import DATAFLOW_DOMAIN, FinnNode, datatype_bits
from .graph import ModelGraph, Tie
from .ops import VVAU, ConvolutionInputGenerator, FinnLayer, Pool, op_class
from .ops.base import Tensor

if TYPE_CHECKING:
    import onnx

    from .plan import Plan

__all__ = ["datatype_bits", "export_finn", "import_onnx", "read_dataflow"]

BYPASSED_OPS = ("IODMA", "IODMA_hls", "TLastMarker", "TLastMarker_hls")
GLOBAL_IN, GLOBAL_OUT = "global_in", "global_out"


# ---------------------------------------------------------------------------------------------------------
# ONNX import


def load_onnx(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    import onnx

    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "model"
    path = Path(source)
    if not path.exists():
        raise InputError(str(path), "file not found")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError and friends for garbage input
        raise InputError(str(path), f"malformed ONNX: {err}") from None
    if not model.graph.node:
        raise InputError(str(path), "malformed ONNX: the graph has no nodes")
    return model, str(path)


def _is_dataflow(node: onnx.NodeProto) -> bool:
    return node.domain == DATAFLOW_DOMAIN or node.domain.startswith(DATAFLOW_DOMAIN + ".")


@dataclass
class Dataflow:
    """The dataflow nodes of a FINN model in topological order (stable in file order), bypassed plumbing
    resolved: `inputs[i]` are node i's stream input tensors, `preds[i]` the positions of their producers."""

    model: onnx.ModelProto
    where: str
    nodes: list[FinnNode]
    ops: list[type[FinnLayer]]
    inputs: list[list[str]]
    preds: list[list[int]]
    alias: dict[str, str]  # output tensor of a bypassed node -> its input tensor

    def resolve(self, tensor: str) -> str:
        """The dataflow tensor behind `tensor` (through bypassed IODMA/TLastMarker nodes)."""
        seen = set()
        while tensor in self.alias and tensor not in seen:
            seen.add(tensor)
            tensor = self.alias[tensor]
        return tensor


def read_dataflow(model: onnx.ModelProto, where: str) -> Dataflow:
    """Check every node, bypass IODMA/TLastMarker and sort the dataflow nodes topologically."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    alias: dict[str, str] = {}  # output tensor of a bypassed node -> its input tensor
    kept: list[FinnNode] = []
    for proto in graph.node:
        node = FinnNode(proto, where, initializers)
        if not _is_dataflow(proto):
            raise InputError(f"{where}: node {node.name}",
                             f"domain {proto.domain or 'ai.onnx'!r} is not a FINN dataflow domain; import the "
                             "dataflow partition (create_dataflow_partition's child model)",
                             [DATAFLOW_DOMAIN, DATAFLOW_DOMAIN + ".hls", DATAFLOW_DOMAIN + ".rtl"])
        if proto.op_type in BYPASSED_OPS:
            if proto.input and proto.output:
                alias[proto.output[0]] = proto.input[0]
            continue
        kept.append(node)
    if not kept:
        raise InputError(where, "no FINN dataflow layers in the model")
    resolve = Dataflow(model, where, [], [], [], [], alias).resolve
    producer: dict[str, int] = {}
    for i, node in enumerate(kept):
        for out in node.proto.output:
            if out in producer:
                raise InputError(f"{where}: node {node.name}", f"tensor {out!r} has two producers")
            producer[out] = i
    streams = [[resolve(t) for t in node.proto.input if t and t not in initializers] for node in kept]
    preds = [list(dict.fromkeys(producer[t] for t in ins if t in producer and producer[t] != i))
             for i, ins in enumerate(streams)]
    order = _toposort(preds, [n.name for n in kept], where)
    position = {old: new for new, old in enumerate(order)}
    ops = [op_class(kept[i].proto.op_type, f"{where}: node {kept[i].name}") for i in order]
    return Dataflow(model, where, [kept[i] for i in order], ops, [streams[i] for i in order],
                    [sorted(position[p] for p in preds[i]) for i in order], alias)


def import_onnx(source: str | Path | onnx.ModelProto, name: str | None = None) -> ModelGraph:
    """A ModelGraph from a FINN dataflow ONNX file (or ModelProto); the file's folding becomes `settings`."""
    model, where = load_onnx(source)
    parts = [n for n in model.graph.node if n.op_type == "StreamingDataflowPartition"]
    if parts:
        if len(parts) != 1 or not isinstance(source, str | Path):
            raise InputError(where, "expected the dataflow partition model (one StreamingDataflowPartition)")
        child = FinnNode(parts[0], where).get("model")
        child_path = Path(child) if Path(child).is_absolute() else Path(source).parent / child
        return import_onnx(child_path, name)

    flow = read_dataflow(model, where)
    layers = [op.from_finn(node) for op, node in zip(flow.ops, flow.nodes)]
    edges = sorted((s, d) for d in range(len(layers)) for s in flow.preds[d])
    ties = []
    for s, d in edges:
        src, dst = layers[s], layers[d]
        if isinstance(src, ConvolutionInputGenerator) and src.depthwise and isinstance(dst, VVAU | Pool):
            ties.append(Tie(src.name, "SIMD", dst.name, "PE"))
    return ModelGraph(name or Path(where).stem, layers, edges, ties,
                      input_bits_per_frame=_input_bits(model, layers[0]), description=f"imported from {where}")


def _input_bits(model: onnx.ModelProto, first: FinnLayer) -> int:
    """Bits of one input frame: the graph input's shape times its FINN datatype (annotation) or the first
    layer's input bits; without a static shape, the first layer's stream width times its cycles."""
    folding = first.published_folding()
    bits = first.in_width(folding) * max(1, first.cycles(folding))
    graph = model.graph
    if graph.input:
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            dtype = _annotations(model).get(graph.input[0].name)
            bits = math.prod(dims) * (datatype_bits(dtype) if dtype else getattr(first, "ibits", 8))
    return bits


def _annotations(model: onnx.ModelProto) -> dict[str, str]:
    """FINN datatypes of tensors (graph.quantization_annotation, key finn_datatype)."""
    return {a.tensor_name: kv.value for a in model.graph.quantization_annotation
            for kv in a.quant_parameter_tensor_names if kv.key == "finn_datatype"}


# ---------------------------------------------------------------------------------------------------------
# ONNX export


def export_finn(graph: ModelGraph, seed: int = 0) -> onnx.ModelProto:
    """`graph` as a FINN dataflow ONNX model: one node per layer, named as the layer, with today's FINN op
    types, the layer's folding as node attributes, NHWC tensors and FINN datatype annotations, and weights,
    thresholds and channelwise parameters drawn from a generator seeded with `seed` (same seed, same model).

    Stream tensors are named `global_in`, `<layer>_out<j>` and `global_out` (`global_out_<k>` when several
    layers end the graph); the parameters of layer L are the initializers `L_param<k>`."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    not_finn = [layer.name for layer in graph.layers if not isinstance(layer, FinnLayer)]
    if not_finn:
        raise InputError(f"{graph.name}: layers {not_finn[:5]}", "are not FINN dataflow layers; only models made of "
                         "FINN ops (the zoo networks, imported FINN models) can be exported")
    rng = np.random.default_rng(seed)
    count = len(graph.layers)
    preds = [sorted(u for u, v in graph.edges if v == i) for i in range(count)]
    succs = [sorted(v for u, v in graph.edges if u == i) for i in range(count)]
    ends = [i for i in range(count) if not succs[i]]
    tensors: dict[str, Tensor] = {GLOBAL_IN: _source_tensor(graph, succs)}
    outputs: list[list[str]] = []
    nodes, initializers = [], []
    for i, layer in enumerate(graph.layers):
        inputs = [_edge_tensor(outputs, succs, u, i) for u in preds[i]] or [GLOBAL_IN]
        spec = layer.to_finn(rng, [tensors[t] for t in inputs])
        names = [f"{layer.name}_out{j}" for j in range(len(spec.outputs))]
        if i in ends and len(names) == 1:
            names = [GLOBAL_OUT if len(ends) == 1 else f"{GLOBAL_OUT}_{ends.index(i)}"]
        outputs.append(names)
        tensors.update(zip(names, spec.outputs))
        params = [f"{layer.name}_param{k}" for k in range(len(spec.params))]
        initializers += [numpy_helper.from_array(np.asarray(value, dtype=np.float32), param)
                         for param, value in zip(params, spec.params)]
        nodes.append(helper.make_node(spec.op_type, inputs + params, names, name=layer.name, domain=spec.domain,
                                      **spec.attrs))
    info = {name: helper.make_tensor_value_info(name, TensorProto.FLOAT, list(t.shape)) for name, t in tensors.items()}
    graph_outputs = [name for i in ends for name in outputs[i]]
    proto = helper.make_graph(nodes, graph.name, [info[GLOBAL_IN]], [info[n] for n in graph_outputs], initializers,
                              value_info=[v for n, v in info.items() if n != GLOBAL_IN and n not in graph_outputs])
    for name, tensor in tensors.items():
        proto.quantization_annotation.add(tensor_name=name).quant_parameter_tensor_names.add(
            key="finn_datatype", value=tensor.dtype.name)
    domains = sorted({n.domain for n in nodes})
    return helper.make_model(proto, producer_name="elasticdf",
                             opset_imports=[helper.make_opsetid("", 11)] + [helper.make_opsetid(d, 1) for d in domains])


def _source_tensor(graph: ModelGraph, succs: list[list[int]]) -> Tensor:
    """The model's input stream: what the first layer that is not a pass-through (FIFO, width converter) reads."""
    index = 0
    while graph.layers[index].finn_input() is None and succs[index]:
        index = succs[index][0]
    tensor = graph.layers[index].finn_input()
    if tensor is None:
        raise InputError(graph.name, "no layer declares the model's input stream")
    return tensor


def _edge_tensor(outputs: list[list[str]], succs: list[list[int]], producer: int, consumer: int) -> str:
    """The producer's output feeding `consumer`: output j feeds the j-th successor when there is one output per
    successor (DuplicateStreams), else output 0 feeds all."""
    names = outputs[producer]
    return names[succs[producer].index(consumer)] if len(names) > 1 else names[0]


def _toposort(preds: list[list[int]], names: list[str], where: str) -> list[int]:
    indegree = [len(p) for p in preds]
    succs: list[list[int]] = [[] for _ in preds]
    for d, ps in enumerate(preds):
        for s in ps:
            succs[s].append(d)
    ready = [i for i, deg in enumerate(indegree) if deg == 0]
    order: list[int] = []
    while ready:
        ready.sort()
        i = ready.pop(0)
        order.append(i)
        for d in succs[i]:
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    if len(order) != len(preds):
        stuck = [names[i] for i in range(len(preds)) if i not in set(order)]
        raise InputError(where, f"the graph has a cycle through {stuck[:5]}")
    return order


# ---------------------------------------------------------------------------------------------------------
# folding-config JSON


def read_folding_config(path: str | Path) -> dict:
    """A FINN folding-config JSON ({"Defaults": {...}, node: {attr: value}}) as a dict."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(str(path), f"malformed JSON: {err}") from None
    if not isinstance(config, dict):
        raise InputError(str(path), "expected a JSON object of node name -> attributes")
    for node, attrs in config.items():
        if not isinstance(attrs, dict):
            raise InputError(f"{path}: {node}", "expected an object of attribute -> value")
    return config


def write_folding_config(config: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def apply_folding_file(model: ModelGraph, path: str | Path) -> None:
    model.apply_folding_config(read_folding_config(path))


# ---------------------------------------------------------------------------------------------------------
# per-segment ONNX export


def segment_models(plan: Plan, source: str | Path) -> dict[str, onnx.ModelProto]:
    """One ONNX model per (instance, segment): the dataflow nodes of its layer range, cut at tensor boundaries.

    Folding attributes of the plan (instance 0's folding config) are written onto the nodes.
    """
    model, _ = load_onnx(source)
    index = _layer_index(model)
    name = Path(model.graph.name or "model").stem
    return {f"instance{i}/segment{s}_{segment.node}-card{segment.card}.onnx":
            _cut(model, index, *segment.layer_range, plan.folding, f"{name}_i{i}_s{s}")
            for i, instance in enumerate(plan.instances) for s, segment in enumerate(instance.segments)}


def dataflow_ranges(model: onnx.ModelProto, ranges: list[tuple[int, int]],
                    folding: dict[str, dict]) -> dict[tuple[int, int], onnx.ModelProto]:
    """(first, last) -> the FINN dataflow model of layers first..last (import_onnx's layer order), cut at tensor
    boundaries, with `folding` (FINN folding config: node -> {PE, SIMD, ...}) set as node attributes."""
    index = _layer_index(model)
    return {(first, last): _cut(model, index, first, last, folding, f"{model.graph.name}_layers{first}_{last}")
            for first, last in ranges}


def _layer_index(model: onnx.ModelProto) -> dict[str, int]:
    return {layer.name: i for i, layer in enumerate(import_onnx(model).layers)}


def _cut(model: onnx.ModelProto, index: dict[str, int], first: int, last: int, folding: dict[str, dict],
         name: str) -> onnx.ModelProto:
    from onnx import helper

    nodes = [n for n in model.graph.node if n.name in index]
    value_info = {v.name: v for v in [*model.graph.input, *model.graph.output, *model.graph.value_info]}
    inside = [n for n in nodes if first <= index[n.name] <= last]
    produced = {t for n in inside for t in n.output}
    consumed = {t for n in inside for t in n.input}
    outside_consumed = {t for n in nodes if not first <= index[n.name] <= last for t in n.input}
    graph_outputs = {o.name for o in model.graph.output}
    inputs = [t for n in inside for t in n.input if t not in produced and _is_stream(t, model)]
    outputs = [t for t in produced if t in outside_consumed or t in graph_outputs or t not in consumed]
    new_nodes = []
    for n in inside:
        copy = type(n)()
        copy.CopyFrom(n)
        for attr, value in folding.get(n.name, {}).items():
            _set_attr(copy, attr, value)
        new_nodes.append(copy)
    sub = helper.make_graph(
        new_nodes, name,
        [value_info.get(t) or helper.make_empty_tensor_value_info(t) for t in dict.fromkeys(inputs)],
        [value_info.get(t) or helper.make_empty_tensor_value_info(t) for t in sorted(outputs)],
        initializer=[init for init in model.graph.initializer if init.name in consumed],
    )
    return helper.make_model(sub, opset_imports=list(model.opset_import))


def _is_stream(tensor: str, model: onnx.ModelProto) -> bool:
    return tensor not in {init.name for init in model.graph.initializer}


def _set_attr(node: onnx.NodeProto, attr: str, value: Any) -> None:
    from onnx import helper

    for existing in list(node.attribute):
        if existing.name == attr:
            node.attribute.remove(existing)
    node.attribute.append(helper.make_attribute(attr, value))


def write_segment_onnx(plan: Plan, source: str | Path, out_dir: str | Path) -> list[Path]:
    import onnx

    written = []
    for name, sub in segment_models(plan, source).items():
        path = Path(out_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(sub, str(path))
        written.append(path)
    return written
