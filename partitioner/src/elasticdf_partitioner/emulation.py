"""Emulation: a FINN dataflow ONNX model lowered to standard ONNX (opset 17) that onnxruntime runs.

Each dataflow node becomes the standard nodes its op class's `lower` emits (FINN's semantics of the op; see
lowering.py for the tensor conventions: NHWC, exact integers in float32, float64 where values can reach
2**24). The lowered model keeps FINN's layer structure for the segment runtime:
- every node of FINN node L is named "L/<op>_<k>", so grouping nodes by the name before the first "/" gives
  back the FINN layers;
- the layers appear in the order `finn_io.import_onnx` numbers them (topological, stable in file order), so
  a plan's layer ranges cut the lowered model where they cut the FINN model;
- the graph input and output names are the FINN model's; IODMA and TLastMarker nodes are bypassed, as the
  importer does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InputError
from .finn_io import load_onnx, read_dataflow
from .lowering import FLOAT, OPSET, Lowering

if TYPE_CHECKING:
    from pathlib import Path

    import onnx


def lower_model(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    """The standard-ONNX model computing what the FINN dataflow model `model` computes, bit for bit."""
    from onnx import helper

    model, where = load_onnx(model)
    flow = read_dataflow(model, where)
    graph = model.graph
    if len(graph.input) != 1:
        raise InputError(where, f"expected one graph input, got {[i.name for i in graph.input]}")
    outputs = {flow.resolve(o.name): o for o in graph.output}
    ctx = Lowering()
    lowered: dict[str, str] = {graph.input[0].name: graph.input[0].name}  # FINN tensor -> lowered tensor
    ctx.dtype[graph.input[0].name] = FLOAT
    for node, op, inputs in zip(flow.nodes, flow.ops, flow.inputs):
        op.from_finn(node)  # validates the node's attributes as the importer does
        ctx.begin(node.name)
        missing = [t for t in inputs if t not in lowered]
        if missing:
            raise InputError(f"{where}: node {node.name}", f"input tensors {missing} have no producer")
        before = len(ctx.nodes)
        results = op.lower(node, ctx, [lowered[t] for t in inputs])
        if len(ctx.nodes) == before:  # every layer keeps at least one node, or the segment runtime loses it
            results = [ctx.op("Identity", [r]) for r in results]
        for finn_tensor, result in zip(node.proto.output, results):
            lowered[finn_tensor] = result
            if finn_tensor in outputs:
                lowered[finn_tensor] = ctx.op("Identity", [result], outputs=[outputs[finn_tensor].name])
    missing = [o.name for o in graph.output if flow.resolve(o.name) not in lowered]
    if missing:
        raise InputError(where, f"graph outputs {missing} are not produced by any dataflow node")
    inputs = [helper.make_tensor_value_info(graph.input[0].name, FLOAT, _dims(graph.input[0]))]
    results = [helper.make_tensor_value_info(o.name, ctx.dtype[o.name], _dims(o)) for o in graph.output]
    lowered_graph = helper.make_graph(ctx.nodes, graph.name or "lowered", inputs, results, ctx.initializers)
    return helper.make_model(lowered_graph, producer_name="elasticdf-emulation",
                             opset_imports=[helper.make_opsetid("", OPSET)])


def _dims(value: onnx.ValueInfoProto) -> list[int | str] | None:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value or d.dim_param or "?" for d in dims] if dims else None
