"""FINN file formats: dataflow ONNX import, folding-config JSON read/write, per-segment ONNX export.

Import reads a FINN *dataflow* model (the child of `create_dataflow_partition`, or a whole model made only of
fpgadataflow nodes): every node must be in domain `finn.custom_op.fpgadataflow` (or its `.hls`/`.rtl`
sub-domains) with an op type from `ops.FINN_OP_TYPES` (FINN v0.6 and today's names). Shapes, datatypes and
folding/variant attributes come from the node attributes. Shell plumbing nodes (IODMA, TLastMarker) are
bypassed: their consumers are wired to their producers. Edges come from tensor names; nodes are sorted
topologically (stable in file order). Anything malformed raises InputError naming the file, node and attribute.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .graph import ModelGraph, Tie
from .ops import (
    MVAU,
    VVAU,
    AddStreams,
    ChannelwiseOp,
    ConvDoublePacked,
    ConvolutionInputGenerator,
    DownSampler,
    DuplicateStreams,
    FinnLayer,
    FMPadding,
    LabelSelect,
    Pool,
    StreamingDataWidthConverter,
    StreamingFIFO,
    StreamingMaxPool,
    Thresholding,
    canonical_op,
)
from .ops.mvau import DEFAULT_WWIDTH_MAX

if TYPE_CHECKING:
    import onnx

    from .plan import Plan

DATAFLOW_DOMAIN = "finn.custom_op.fpgadataflow"
BYPASSED_OPS = ("IODMA", "IODMA_hls", "TLastMarker", "TLastMarker_hls")
SETTINGS_ATTRS = ("PE", "SIMD", "MMV", "ram_style", "mem_mode", "resType", "impl_style", "depth")

# ---------------------------------------------------------------------------------------------------------
# FINN datatypes


def datatype_bits(name: str, where: str = "datatype") -> int:
    """Bit width of a FINN/QONNX DataType name: BIPOLAR, BINARY, TERNARY, INT8, UINT4, FIXED<8,4>, FLOAT32, ..."""
    text = str(name).strip().upper()
    if text in ("BIPOLAR", "BINARY"):
        return 1
    if text == "TERNARY":
        return 2
    match = re.fullmatch(r"(?:U?INT|SCALEDINT<|FIXED<|FLOAT)(\d+)(?:,\d+)?>?", text)
    if match and int(match.group(1)) > 0:
        return int(match.group(1))
    raise InputError(where, f"unknown FINN datatype {name!r}",
                     ["BIPOLAR", "BINARY", "TERNARY", "INT<n>", "UINT<n>", "FIXED<w,i>", "FLOAT32"])


def datatype_range(name: str, where: str = "datatype") -> tuple[int, int]:
    """Smallest and largest integer of a FINN integer datatype (BIPOLAR -1..1, INT4 -8..7, UINT4 0..15)."""
    text = str(name).strip().upper()
    bits = datatype_bits(text, where)
    if text == "BIPOLAR":
        return -1, 1
    if text.startswith("INT") or text == "TERNARY":
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


# ---------------------------------------------------------------------------------------------------------
# node attribute access


class _Node:
    """Attribute access for one ONNX node with errors that name the node and attribute."""

    def __init__(self, node: onnx.NodeProto, source: str):
        from onnx import helper

        self.proto = node
        self.name = node.name or f"<unnamed {node.op_type}>"
        self.source = source
        self.attrs: dict[str, Any] = {}
        for attr in node.attribute:
            value = helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, list):
                value = [v.decode() if isinstance(v, bytes) else v for v in value]
            self.attrs[attr.name] = value

    def where(self, attr: str) -> str:
        return f"{self.source}: node {self.name} ({self.proto.op_type}).{attr}"

    def get(self, attr: str, default: Any = None) -> Any:
        if attr in self.attrs:
            return self.attrs[attr]
        if default is None:
            raise InputError(self.where(attr), "missing attribute")
        return default

    def int(self, attr: str, default: int | None = None) -> int:
        value = self.get(attr, default)
        if isinstance(value, list):  # [H, W] style attributes: square images only
            if not value:
                raise InputError(self.where(attr), "empty list")
            value = value[0]
        if not isinstance(value, int) or value < 0:
            raise InputError(self.where(attr), f"expected a non-negative integer, got {value!r}")
        return value

    def ints(self, attr: str, default: list[int] | None = None) -> list[int]:
        value = self.get(attr, default)
        value = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and v >= 0 for v in value):
            raise InputError(self.where(attr), f"expected integers, got {value!r}")
        return value

    def bits(self, attr: str, default: str | None = None) -> int:
        return datatype_bits(self.get(attr, default), self.where(attr))

    def settings(self) -> dict:
        return {a: self.attrs[a] for a in SETTINGS_ATTRS if a in self.attrs}


def _prod(values: Iterable[int]) -> int:
    return math.prod(values) if values else 1


def _n_vec(node: _Node) -> int:
    return _prod(node.ints("numInputVectors", [1]))


# ---------------------------------------------------------------------------------------------------------
# one builder per op family


def _mvau(n: _Node) -> FinnLayer:
    w, simd = n.bits("weightDataType"), n.int("SIMD", 1)
    activation = n.int("noActivation", 0) == 0
    layer = MVAU(n.name, MW=n.int("MW"), MH=n.int("MH"), n_vec=_n_vec(n), wbits=w, ibits=n.bits("inputDataType"),
                 obits=n.bits("outputDataType"), activation=activation,
                 wwidth_max=max(DEFAULT_WWIDTH_MAX, w * simd), settings=n.settings())
    return layer


def _double_packed(n: _Node) -> FinnLayer:
    w = n.bits("weightDataType")
    ofm = n.int("OFMDim", 0) or math.isqrt(_n_vec(n))
    return ConvDoublePacked(n.name, MW=n.int("MW"), MH=n.int("MH"), n_vec=_n_vec(n) if "numInputVectors" in n.attrs
                            else ofm * ofm, wbits=w, ibits=n.bits("inputDataType"), obits=n.bits("outputDataType"),
                            ofm_w=ofm, wwidth_max=max(DEFAULT_WWIDTH_MAX, w * n.int("SIMD", 1)),
                            settings=n.settings())


def _vvau(n: _Node) -> FinnLayer:
    return VVAU(n.name, channels=n.int("Channels"), kernel=n.int("Kernel"), ofm=n.int("Dim"),
                wbits=n.bits("weightDataType"), ibits=n.bits("inputDataType"), obits=n.bits("outputDataType"),
                activation=n.int("noActivation", 0) == 0, settings=n.settings())


def _swg(n: _Node) -> FinnLayer:
    return ConvolutionInputGenerator(
        n.name, channels=n.int("IFMChannels"), ifm=n.int("IFMDim"), kernel=n.int("ConvKernelDim"),
        stride=n.int("Stride", 1), ibits=n.bits("inputDataType"), depthwise=bool(n.int("depthwise", 0)),
        ofm=n.int("OFMDim", 0), settings=n.settings())


def _thresholding(n: _Node) -> FinnLayer:
    return Thresholding(n.name, channels=n.int("NumChannels"), n_vec=_n_vec(n), ibits=n.bits("inputDataType"),
                        obits=n.bits("outputDataType"), settings=n.settings())


def _channelwise(n: _Node) -> FinnLayer:
    return ChannelwiseOp(n.name, channels=n.int("NumChannels"), n_vec=_n_vec(n), ibits=n.bits("inputDataType"),
                         obits=n.bits("outputDataType"), settings=n.settings())


def _fifo(n: _Node) -> FinnLayer:
    shape = n.ints("folded_shape")
    bits = n.bits("dataType")
    return StreamingFIFO(n.name, width=shape[-1] * bits, depth=n.int("depth"), bits_per_frame=_prod(shape) * bits,
                         settings=n.settings())


def _dwc(n: _Node) -> FinnLayer:
    bits = n.bits("dataType")
    return StreamingDataWidthConverter(n.name, in_width_bits=n.int("inWidth"), out_bits=n.int("outWidth"),
                                       bits_per_frame=_prod(n.ints("shape")) * bits, settings=n.settings())


def _add(n: _Node) -> FinnLayer:
    return AddStreams(n.name, channels=n.int("NumChannels"), n_vec=_n_vec(n), ibits=n.bits("inputDataType"),
                      settings=n.settings())


def _duplicate(n: _Node) -> FinnLayer:
    return DuplicateStreams(n.name, channels=n.int("NumChannels"), n_vec=_n_vec(n), ibits=n.bits("inputDataType"),
                            settings=n.settings())


def _downsampler(n: _Node) -> FinnLayer:
    return DownSampler(n.name, channels=n.int("NumChannels"), ifm=n.int("ImgDim"), ibits=n.bits("inputDataType"),
                       stride=n.int("Stride", 2), settings=n.settings())


def _fmpadding(n: _Node) -> FinnLayer:
    pad = n.ints("Padding")
    total = pad[0] + pad[2] if len(pad) == 4 else (pad[0] if len(pad) == 1 else sum(pad[:2]))
    return FMPadding(n.name, channels=n.int("NumChannels"), ifm=n.int("ImgDim"), ibits=n.bits("inputDataType"),
                     padding=total, settings=n.settings())


def _pool(n: _Node) -> FinnLayer:
    return Pool(n.name, channels=n.int("Channels"), kernel=n.int("KernelSize"), ofm=n.int("OutImgDim"),
                ibits=n.bits("inputDataType"), obits=n.bits("outputDataType", n.get("inputDataType")),
                function=str(n.get("Function", "MaxPool")), settings=n.settings())


def _labelselect(n: _Node) -> FinnLayer:
    return LabelSelect(n.name, labels=n.int("Labels"), k=n.int("K", 1), ibits=n.bits("inputDataType"),
                       obits=n.bits("outputDataType", "UINT32") if "outputDataType" in n.attrs else 0,
                       settings=n.settings())


def _maxpool(n: _Node) -> FinnLayer:
    return StreamingMaxPool(n.name, channels=n.int("NumChannels"), ifm=n.int("ImgDim"), pool=n.int("PoolDim"),
                            ibits=n.bits("dataType"), settings=n.settings())


BUILDERS = {
    "MVAU": _mvau, "ConvDoublePacked": _double_packed, "VVAU": _vvau, "ConvolutionInputGenerator": _swg,
    "Thresholding": _thresholding, "ChannelwiseOp": _channelwise, "StreamingFIFO": _fifo,
    "StreamingDataWidthConverter": _dwc, "AddStreams": _add, "DuplicateStreams": _duplicate,
    "DownSampler": _downsampler, "FMPadding": _fmpadding, "Pool": _pool, "LabelSelect": _labelselect,
    "StreamingMaxPool": _maxpool,
}


# ---------------------------------------------------------------------------------------------------------
# ONNX import


def _load_onnx(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
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


def import_onnx(source: str | Path | onnx.ModelProto, name: str | None = None) -> ModelGraph:
    """A ModelGraph from a FINN dataflow ONNX file (or ModelProto); the file's folding becomes `settings`."""
    model, where = _load_onnx(source)
    graph = model.graph
    parts = [n for n in graph.node if n.op_type == "StreamingDataflowPartition"]
    if parts:
        if len(parts) != 1 or not isinstance(source, str | Path):
            raise InputError(where, "expected the dataflow partition model (one StreamingDataflowPartition)")
        child = _Node(parts[0], where).get("model")
        child_path = Path(child) if Path(child).is_absolute() else Path(source).parent / child
        return import_onnx(child_path, name)

    producer: dict[str, int] = {}
    alias: dict[str, str] = {}  # output tensor of a bypassed node -> its input tensor
    kept: list[tuple[_Node, FinnLayer]] = []
    for proto in graph.node:
        node = _Node(proto, where)
        if not _is_dataflow(proto):
            raise InputError(f"{where}: node {node.name}",
                             f"domain {proto.domain or 'ai.onnx'!r} is not a FINN dataflow domain; import the "
                             "dataflow partition (create_dataflow_partition's child model)",
                             [DATAFLOW_DOMAIN, DATAFLOW_DOMAIN + ".hls", DATAFLOW_DOMAIN + ".rtl"])
        if proto.op_type in BYPASSED_OPS:
            if proto.input and proto.output:
                alias[proto.output[0]] = proto.input[0]
            continue
        op = canonical_op(proto.op_type, f"{where}: node {node.name}")
        layer = BUILDERS[op](node)
        for out in proto.output:
            if out in producer:
                raise InputError(f"{where}: node {node.name}", f"tensor {out!r} has two producers")
            producer[out] = len(kept)
        kept.append((node, layer))
    if not kept:
        raise InputError(where, "no FINN dataflow layers in the model")

    def resolve(tensor: str) -> str:
        seen = set()
        while tensor in alias and tensor not in seen:
            seen.add(tensor)
            tensor = alias[tensor]
        return tensor

    preds: list[list[int]] = []
    for i, (node, _layer) in enumerate(kept):
        srcs = []
        for tensor in node.proto.input:
            src = producer.get(resolve(tensor))
            if src is not None and src != i and src not in srcs:
                srcs.append(src)
        preds.append(srcs)
    order = _toposort(preds, [n.name for n, _ in kept], where)
    position = {old: new for new, old in enumerate(order)}
    layers = [kept[i][1] for i in order]
    edges = sorted((position[s], position[d]) for d in range(len(kept)) for s in preds[d])
    ties = []
    for s, d in edges:
        src, dst = layers[s], layers[d]
        if isinstance(src, ConvolutionInputGenerator) and src.depthwise and isinstance(dst, VVAU | Pool):
            ties.append(Tie(src.name, "SIMD", dst.name, "PE"))
    first = layers[0]
    input_bits = first.in_width(first.published_folding()) * max(1, first.cycles(first.published_folding()))
    if graph.input:
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            input_bits = _prod(dims) * getattr(first, "ibits", 8)
    return ModelGraph(name or Path(where).stem, layers, edges, ties, input_bits_per_frame=input_bits,
                      description=f"imported from {where}")


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
    from onnx import helper

    model, where = _load_onnx(source)
    graph = import_onnx(model)
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    nodes = [n for n in model.graph.node if n.name in index]
    value_info = {v.name: v for v in [*model.graph.input, *model.graph.output, *model.graph.value_info]}
    out: dict[str, onnx.ModelProto] = {}
    for i, instance in enumerate(plan.instances):
        for s, segment in enumerate(instance.segments):
            first, last = segment.layer_range
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
                for attr, value in plan.folding.get(n.name, {}).items():
                    _set_attr(copy, attr, value)
                new_nodes.append(copy)
            sub = helper.make_graph(
                new_nodes, f"{graph.name}_i{i}_s{s}",
                [value_info.get(t) or helper.make_empty_tensor_value_info(t) for t in dict.fromkeys(inputs)],
                [value_info.get(t) or helper.make_empty_tensor_value_info(t) for t in sorted(outputs)],
                initializer=[init for init in model.graph.initializer if init.name in consumed],
            )
            out[f"instance{i}/segment{s}_{segment.node}-card{segment.card}.onnx"] = helper.make_model(
                sub, opset_imports=list(model.opset_import))
    return out


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
