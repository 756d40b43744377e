"""Cut a runnable (standard ONNX) model by layer range, wherever the planner cut it: what the emulation builder
puts into a card build and what a segment pod runs without one.

A *layer* is a group of nodes sharing the name prefix before the first "/" ("conv0/Conv", "conv0/Round" form
layer "conv0"; a lowered FINN model names its nodes "<FINN node>/<op>"); nodes without "/" are a layer each.
Layers are numbered in order of first appearance (ONNX files are topologically sorted), which matches the
partitioner's layer index.

The frame protocol carries one tensor per request, but a cut inside a residual block leaves several tensors
live (the block's input on the skip path and the branch's partial result). Such a cut carries them as ONE
packed tensor: each live tensor flattened per frame ([N, -1]) and concatenated along axis 1, in the order the
tensors first appear in the model. The sending segment packs, the receiving one splits and reshapes; tensors
that skip a whole segment pass through it inside the pack. A cut with one live tensor sends it unchanged, so
the first segment takes the model's input and the last returns the model's output as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

PACKED_INPUT, PACKED_OUTPUT = "packed_in", "packed_out"


def layer_of(node: onnx.NodeProto) -> str:
    return node.name.split("/", 1)[0] if node.name else node.output[0]


def layer_names(model: onnx.ModelProto) -> list[str]:
    return list(dict.fromkeys(layer_of(n) for n in model.graph.node))


@dataclass(frozen=True)
class Live:
    """A tensor crossing a cut: its name, per-frame shape (without the batch axis) and element type."""

    name: str
    shape: tuple[int, ...]
    elem_type: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class _Layers:
    """The model's layers with, for every tensor, where it is made and where it is last needed."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.names = layer_names(model)
        position = {name: i for i, name in enumerate(self.names)}
        initializers = {i.name for i in model.graph.initializer}
        self.made: dict[str, int] = {i.name: -1 for i in model.graph.input if i.name not in initializers}
        self.needed: dict[str, int] = {o.name: len(self.names) for o in model.graph.output}
        for node in model.graph.node:
            at = position[layer_of(node)]
            for t in node.output:
                self.made.setdefault(t, at)
            for t in node.input:
                if t and t not in initializers:
                    self.needed[t] = max(self.needed.get(t, at), at)
        self.order = {t: i for i, t in enumerate(self.made)}  # first appearance: the pack order
        shaped = onnx.shape_inference.infer_shapes(model)
        self.info = {v.name: v for v in [*shaped.graph.input, *shaped.graph.value_info, *shaped.graph.output]}

    def live_before(self, position: int) -> list[Live]:
        """Tensors made before layer `position` and needed at or after it."""
        names = sorted((t for t, at in self.made.items() if at < position <= self.needed.get(t, -1)),
                       key=self.order.__getitem__)
        return [self._live(t) for t in names]

    def _live(self, tensor: str) -> Live:
        value = self.info.get(tensor)
        if value is None or not value.type.tensor_type.HasField("shape"):
            raise ValueError(f"tensor {tensor!r} crosses a cut but its shape is unknown (run shape inference)")
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if any(d <= 0 for d in dims[1:]):
            raise ValueError(f"tensor {tensor!r} crosses a cut with a dynamic shape {dims}")
        return Live(tensor, tuple(dims[1:]), value.type.tensor_type.elem_type)


def cut(model: onnx.ModelProto, first: int, last: int) -> onnx.ModelProto:
    """The sub-model of layers first..last (inclusive) with one input and one output tensor."""
    layers = _Layers(model)
    names = layers.names
    if not 0 <= first <= last < len(names):
        raise ValueError(f"layer range [{first}, {last}] outside the model's {len(names)} layers")
    inside_layers = set(names[first:last + 1])
    nodes = [_copy(n) for n in model.graph.node if layer_of(n) in inside_layers]
    incoming, outgoing = layers.live_before(first), layers.live_before(last + 1)
    if len(model.graph.output) != 1 and last == len(names) - 1:
        raise ValueError(f"the model has {len(model.graph.output)} outputs; a pipeline returns one")
    in_value, unpack = _receive(incoming)
    out_value, pack = _send(outgoing)
    used = {t for n in nodes for t in n.input}
    graph = helper.make_graph(
        unpack + nodes + pack, f"{model.graph.name}_layers{first}_{last}", [in_value], [out_value],
        initializer=[i for i in model.graph.initializer if i.name in used] + _shape_constants(incoming))
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _value(name: str, live: Live) -> onnx.ValueInfoProto:
    """A segment's input or output: any number of frames (the gateway batches requests)."""
    return helper.make_tensor_value_info(name, live.elem_type, ["N", *live.shape])


def _packed_type(lives: list[Live]) -> int:
    types = {live.elem_type for live in lives}
    if len(types) != 1:
        raise ValueError(f"tensors crossing one cut have different element types: {[lv.name for lv in lives]}")
    return types.pop()


def _receive(incoming: list[Live]) -> tuple[onnx.ValueInfoProto, list[onnx.NodeProto]]:
    """The segment's input, and the nodes that unpack it into the live tensors when there are several."""
    if len(incoming) == 1:
        return _value(incoming[0].name, incoming[0]), []
    packed = Live(PACKED_INPUT, (sum(lv.size for lv in incoming),), _packed_type(incoming))
    flat = [f"{live.name}__flat" for live in incoming]
    nodes = [helper.make_node("Split", [PACKED_INPUT, "unpack__sizes"], flat, axis=1, name="unpack/Split")]
    nodes += [helper.make_node("Reshape", [f, f"{live.name}__shape"], [live.name], name=f"unpack/{live.name}")
              for f, live in zip(flat, incoming)]
    return _value(PACKED_INPUT, packed), nodes


def _shape_constants(incoming: list[Live]) -> list[onnx.TensorProto]:
    if len(incoming) == 1:
        return []
    sizes = numpy_helper.from_array(np.array([lv.size for lv in incoming], dtype=np.int64), "unpack__sizes")
    return [sizes] + [numpy_helper.from_array(np.array([-1, *lv.shape], dtype=np.int64), f"{lv.name}__shape")
                      for lv in incoming]


def _send(outgoing: list[Live]) -> tuple[onnx.ValueInfoProto, list[onnx.NodeProto]]:
    """The segment's output, and the nodes that pack the live tensors into it when there are several."""
    if len(outgoing) == 1:
        return _value(outgoing[0].name, outgoing[0]), []
    packed = Live(PACKED_OUTPUT, (sum(lv.size for lv in outgoing),), _packed_type(outgoing))
    flat = [f"{live.name}__packflat" for live in outgoing]
    nodes = [helper.make_node("Flatten", [live.name], [f], axis=1, name=f"pack/{live.name}")
             for f, live in zip(flat, outgoing)]
    nodes.append(helper.make_node("Concat", flat, [PACKED_OUTPUT], axis=1, name="pack/Concat"))
    return _value(PACKED_OUTPUT, packed), nodes


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def split(model: onnx.ModelProto, ranges: list[list[int]]) -> list[onnx.ModelProto]:
    return [cut(model, first, last) for first, last in ranges]
