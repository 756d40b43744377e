"""QONNX (a Brevitas export) -> FINN dataflow ONNX: the nodes FINN's QONNX conversion, streamlining and
`convert_to_hw` would build, in domain `finn.custom_op.fpgadataflow.hls`.

The conversion is one pass over the QONNX nodes (ONNX keeps them in topological order) with one handler per
op type (`HANDLERS`). Every QONNX tensor becomes one of four values:

- `Const`: a float constant (initializer, Constant node, or a constant-only subgraph folded on the spot);
- `Weight`: a constant through a Quant/BipolarQuant: integer values, per-channel scale and a FINN datatype;
- `Source`: the float graph input before its quantizer;
- `Stream`: an integer tensor of the dataflow graph (FINN layout: NHWC, or (1, K) once flattened) and the
  chain of per-channel monotone maps (`Affine`, `Relu`) that turn its integers into QONNX's real values.

Scales, biases, BatchNorm and ReLU only extend a stream's chain. A quantizer on a stream (Quant,
BipolarQuant) ends the chain: its integer outputs are a step function of the stream's integers, found
exactly as per-channel thresholds by binary search, and go into the producing MVAU/VVAU (which FINN would
have merged its MultiThreshold into) or into a Thresholding node. Decreasing channels (a negative scale) are
turned around by negating that channel's weights, as FINN's streamlining does. Convolutions become
(FMPadding +) ConvolutionInputGenerator + MVAU (VVAU for depthwise); 1x1 convolutions an MVAU (after a
DownSampler if strided); MatMul/Gemm an MVAU whose weight rows follow the stream's NHWC order; max pools
StreamingMaxPool (or SWG + Pool); average pools SWG + Pool(QuantAvgPool without shift) whose 1/k² moves
into the next thresholds; two streams of one scale added give AddStreams; a stream read twice gets a
DuplicateStreams; TopK/ArgMax gives LabelSelect.

What stays outside the integer graph is written to the model's metadata (`elasticdf.qonnx`): the input
quantizer (float image -> integers, NCHW -> NHWC) and, per output, the per-channel scale and bias that turn
its integers back into QONNX's values. Within those, the result equals QONNX's integer results; thresholds
are exact for the real-valued chain, so only values QONNX's float32 arithmetic rounds across a quantization
boundary can differ (as in FINN).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import InputError

HLS_DOMAIN = "finn.custom_op.fpgadataflow.hls"
METADATA_KEY = "elasticdf.qonnx"
QUANT_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")


# ---------------------------------------------------------------------------------------------------------
# integer datatypes


def datatype_name(lo: int, hi: int, bipolar: bool = False) -> str:
    """The smallest FINN datatype holding every integer in [lo, hi] (BIPOLAR for the two values -1, +1)."""
    if bipolar:
        return "BIPOLAR"
    if lo >= 0:
        return "BINARY" if hi <= 1 else f"UINT{max(int(hi).bit_length(), 1)}"
    bits = max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1
    return f"INT{bits}"


# ---------------------------------------------------------------------------------------------------------
# values


@dataclass(frozen=True)
class Const:
    value: np.ndarray


@dataclass(frozen=True)
class Weight:
    """A quantized constant: real value = ints * scale (scale broadcast against ints)."""

    ints: np.ndarray
    scale: np.ndarray
    datatype: str

    @property
    def value(self) -> np.ndarray:
        return self.ints * self.scale


@dataclass(frozen=True)
class Source:
    """The float graph input and the float steps (Relu, Mul, Add, Flatten) before its quantizer, which run in
    front of the dataflow graph (`input_to_integers`)."""

    name: str
    shape: tuple[int, ...]
    prepare: tuple[dict, ...] = ()

    def then(self, step: dict, shape: tuple[int, ...] | None = None) -> Source:
        return replace(self, prepare=(*self.prepare, step), shape=shape or self.shape)


@dataclass(frozen=True)
class Affine:
    scale: np.ndarray  # per channel of the last (physical) axis, or one value
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale + self.bias


@dataclass(frozen=True)
class Relu:
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0)


@dataclass
class Stream:
    tensor: str
    shape: tuple[int, ...]  # FINN layout: (1, H, W, C) or (1, K)
    lo: np.ndarray  # per-channel integer range of the stream
    hi: np.ndarray
    steps: tuple = ()  # maps from the integers to QONNX's real values, applied in order
    producer: DataflowNode | None = None  # an MVAU/VVAU whose activation is still free
    perm: np.ndarray | None = None  # flat streams: QONNX (NCHW) index of each NHWC position
    bipolar: bool = False

    @property
    def channels(self) -> int:
        return self.shape[-1]

    @property
    def datatype(self) -> str:
        return datatype_name(int(np.min(self.lo)), int(np.max(self.hi)), self.bipolar)

    def real(self, ints: np.ndarray) -> np.ndarray:
        """QONNX's value of these integers; `ints` has channels along its first axis (C, ...)."""
        x = ints.astype(np.float64)
        for step in self.steps:
            x = step(x.T).T if isinstance(step, Affine) else step(x)
        return x

    def affine(self, where: str) -> tuple[np.ndarray, np.ndarray]:
        """(scale, bias) per channel when the chain is affine; an error naming `where` if a Relu is pending."""
        scale, bias = np.ones(self.channels), np.zeros(self.channels)
        for step in self.steps:
            if not isinstance(step, Affine):
                raise InputError(where, "its input is a ReLU output that no quantizer (Quant/BipolarQuant) "
                                        "turned into integers; FINN needs quantized activations here")
            scale, bias = scale * step.scale, bias * step.scale + step.bias
        return np.broadcast_to(scale, self.channels).copy(), np.broadcast_to(bias, self.channels).copy()

    def direction(self) -> np.ndarray:
        """+1 where a channel's real value grows with its integer, -1 where it falls."""
        sign = np.ones(self.channels)
        for step in self.steps:
            if isinstance(step, Affine):  # ReLU never falls
                sign = sign * np.sign(np.broadcast_to(step.scale, self.channels))
        return sign


# ---------------------------------------------------------------------------------------------------------
# the dataflow graph under construction


@dataclass
class DataflowNode:
    op: str  # FINN op type without the _hls suffix
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict
    shape: tuple[int, ...]  # output shape
    params: dict[str, np.ndarray] = field(default_factory=dict)  # initializers by role, in input order

    @property
    def output(self) -> str:
        return self.outputs[0]


class Dataflow:
    """The FINN nodes built so far, in order, with FINN-style names (MVAU_hls_0, ...)."""

    def __init__(self):
        self.nodes: list[DataflowNode] = []
        self.counts: Counter[str] = Counter()
        self.input: Stream | None = None  # the graph input, once the input quantizer is seen

    def add(self, op: str, inputs: list[str], shape: tuple[int, ...], params: dict | None = None,
            **attrs) -> DataflowNode:
        node = DataflowNode(op, self.next_name(op), list(inputs), [], attrs, tuple(shape), dict(params or {}))
        node.outputs.append(f"{node.name}_out")
        self.nodes.append(node)
        return node

    def next_name(self, op: str) -> str:
        name = f"{op}_hls_{self.counts[op]}"
        self.counts[op] += 1
        return name


# ---------------------------------------------------------------------------------------------------------
# quantizers


def _round(mode: str, x: np.ndarray) -> np.ndarray:
    mode = mode.upper()
    if mode in ("ROUND", "HALF_EVEN"):
        return np.round(x)
    if mode == "FLOOR":
        return np.floor(x)
    if mode == "CEIL":
        return np.ceil(x)
    if mode == "DOWN":
        return np.fix(x)
    if mode == "UP":
        return np.sign(x) * np.ceil(np.abs(x))
    if mode == "HALF_UP":
        return np.sign(x) * np.floor(np.abs(x) + 0.5)
    if mode == "HALF_DOWN":
        return np.sign(x) * np.ceil(np.abs(x) - 0.5)
    raise ValueError(mode)


ROUNDING_MODES = ("ROUND", "HALF_EVEN", "FLOOR", "CEIL", "DOWN", "UP", "HALF_UP", "HALF_DOWN")


@dataclass(frozen=True)
class Quantizer:
    """QONNX Quant (clip, then round) or BipolarQuant (sign, +1 at zero); `ints` excludes the zero point."""

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool
    narrow: bool
    rounding: str = "ROUND"

    @property
    def bipolar(self) -> bool:
        return self.bits == 1 and self.signed

    @property
    def qmin(self) -> int:
        if self.bipolar:
            return -1
        return -(2 ** (self.bits - 1)) + int(self.narrow) if self.signed else 0

    @property
    def qmax(self) -> int:
        if self.bipolar:
            return 1
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1 - int(self.narrow)

    @property
    def datatype(self) -> str:
        if self.bipolar:
            return "BIPOLAR"
        if self.bits == 1 and not self.signed:
            return "BINARY"
        return f"{'INT' if self.signed else 'UINT'}{self.bits}"

    def ints(self, x: np.ndarray, scale=None, zero_point=None) -> np.ndarray:
        scale = self.scale if scale is None else scale
        zero_point = self.zero_point if zero_point is None else zero_point
        y = x / scale + zero_point
        if self.bipolar:
            return np.where(y >= 0, 1.0, -1.0)
        return _round(self.rounding, np.clip(y, self.qmin, self.qmax))

    def levels(self) -> np.ndarray:
        """The integer outputs the thresholds count up to (above the lowest one)."""
        return np.array([1.0]) if self.bipolar else np.arange(self.qmin + 1, self.qmax + 1, dtype=np.float64)

    def bind(self, stream: Stream, where: str) -> Bound:
        s, z = _positive_scale(self.scale, stream, where), _per_channel(self.zero_point, stream, where)
        return Bound(lambda real: self.ints(real, s[:, None], z[:, None]), s, np.zeros_like(s) if self.bipolar
                     else -s * z)


@dataclass(frozen=True)
class Truncation(Quantizer):
    """QONNX Trunc (v2): requantize to `output_scale` by a power-of-two step, FINN's QuantAvgPool rescaling.
    `scale`, `zero_point` and the integer range are those of the input and of `bits` output bits."""

    output_scale: np.ndarray = field(default_factory=lambda: np.ones(1))

    def bind(self, stream: Stream, where: str) -> Bound:
        s, z = _positive_scale(self.scale, stream, where), _per_channel(self.zero_point, stream, where)
        out = _positive_scale(self.output_scale, stream, where)
        step = 2.0 ** np.round(np.log2(out / s))

        def to_int(real: np.ndarray) -> np.ndarray:
            y = np.round(real / s[:, None] + z[:, None]) / step[:, None]
            return _round(self.rounding, np.clip(y, self.qmin, self.qmax))

        return Bound(to_int, out, -out * z / step)


@dataclass(frozen=True)
class Bound:
    """A quantizer resolved per channel of one stream: integers of (C, ...) real values and their meaning."""

    to_int: Callable[[np.ndarray], np.ndarray]
    scale: np.ndarray  # real = scale * integer + bias, per channel
    bias: np.ndarray


def _positive_scale(scale: np.ndarray, stream: Stream, where: str) -> np.ndarray:
    scale = _per_channel(scale, stream, where)
    if np.any(scale <= 0):
        raise InputError(where, "quantizer scale must be positive")
    return scale


# ---------------------------------------------------------------------------------------------------------
# conversion context


Handler = Callable[["Converter", onnx.NodeProto], None]
HANDLERS: dict[str, Handler] = {}
# inputs the QONNX quantizers take (x, scale, zero point, bit width, ...): a node with fewer is malformed
QUANTIZER_INPUTS = {"Quant": 4, "BipolarQuant": 2, "Trunc": 5}


def _check_inputs(node: onnx.NodeProto) -> None:
    wanted = QUANTIZER_INPUTS.get(node.op_type, 1)
    if len([i for i in node.input if i]) < wanted:
        raise InputError(_where(node), f"{node.op_type} needs {wanted} inputs, the node has {len(node.input)}")


def handles(*op_types: str):
    def register(fn: Handler) -> Handler:
        for op in op_types:
            HANDLERS[op] = fn
        return fn
    return register


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or node.output[0]} ({node.op_type})"


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _annotated_datatype(graph: onnx.GraphProto, tensor: str) -> str | None:
    """The integer FINN datatype a tensor annotation (quantization_annotation, key finn_datatype) declares."""
    for annotation in graph.quantization_annotation:
        if annotation.tensor_name == tensor:
            for entry in annotation.quant_parameter_tensor_names:
                if entry.key == "finn_datatype" and re.fullmatch(r"U?INT\d+|BINARY|BIPOLAR", entry.value.upper()):
                    return entry.value
    return None


def declared_input(datatype: str) -> Quantizer:
    """The identity quantizer of a FINN datatype name (UINT8, INT4, BIPOLAR, ...): what an input declared
    integer carries."""
    match = re.fullmatch(r"(U?)INT(\d+)", datatype.upper())
    if datatype.upper() == "BIPOLAR":
        return Quantizer(np.ones(1), np.zeros(1), 1, True, False)
    if datatype.upper() == "BINARY":
        return Quantizer(np.ones(1), np.zeros(1), 1, False, False)
    if not match or int(match.group(2)) < 1:
        raise InputError("input_datatype", f"unknown datatype {datatype!r}", ["UINT<n>", "INT<n>", "BINARY", "BIPOLAR"])
    return Quantizer(np.ones(1), np.zeros(1), int(match.group(2)), not match.group(1), False)


class Converter:
    def __init__(self, model: onnx.ModelProto, input_datatype: str | None = None):
        self.model = model
        self.values: dict[str, Const | Weight | Source | Stream] = {}
        self.flow = Dataflow()
        self.readers = Counter(t for n in model.graph.node for t in n.input if t)
        self.readers.update(o.name for o in model.graph.output)
        self.preprocess: dict | None = None
        self.int_tensors: set[str] = set()  # constants that are shapes or indices (int64 in ONNX)
        self.labels: set[str] = set()  # tensors that are LabelSelect indices
        for init in model.graph.initializer:
            self.values[init.name] = Const(numpy_helper.to_array(init).astype(np.float64))
        for inp in model.graph.input:
            if inp.name not in self.values:
                dims = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
                self.values[inp.name] = Source(inp.name, dims)
                if input_datatype:  # FINN's build annotates such an input (e.g. UINT8 pixels) by hand
                    where = f"input {inp.name} (input_datatype {input_datatype})"
                    self.values[inp.name] = _dataflow_input(self, where, Source(inp.name, dims),
                                                            declared_input(input_datatype))

    # --- value access with errors that name the node

    def value(self, tensor: str, node: onnx.NodeProto):
        if tensor not in self.values:
            raise InputError(_where(node), f"input {tensor!r} is not produced by any node, initializer or input")
        return self.values[tensor]

    def stream(self, tensor: str, node: onnx.NodeProto) -> Stream:
        value = self.value(tensor, node)
        declared = _annotated_datatype(self.model.graph, tensor)
        if isinstance(value, Source) and not value.prepare and declared:
            # FINN's build declares the integers of an input that a layer reads unquantized (UINT8 pixels) with
            # a tensor annotation: ModelWrapper.set_tensor_datatype
            where = f"input {tensor} (annotated finn_datatype {declared})"
            value = self.values[tensor] = _dataflow_input(self, where, value, declared_input(declared))
        if isinstance(value, Source):
            raise InputError(_where(node), f"input {tensor!r} is the float model input; quantize it with a Quant "
                                           "node, or declare its integers with input_datatype (e.g. UINT8) or a "
                                           "finn_datatype tensor annotation, as FINN's build does")
        if not isinstance(value, Stream):
            raise InputError(_where(node), f"input {tensor!r} is a constant where an activation stream is needed")
        return value

    def const(self, tensor: str, node: onnx.NodeProto) -> np.ndarray:
        value = self.value(tensor, node)
        if not isinstance(value, Const | Weight):
            raise InputError(_where(node), f"input {tensor!r} must be a constant")
        return value.value

    def weight(self, tensor: str, node: onnx.NodeProto) -> Weight:
        value = self.value(tensor, node)
        if isinstance(value, Weight):
            return value
        if isinstance(value, Const) and np.all(value.value == np.round(value.value)):
            ints = value.value
            return Weight(ints, np.ones(1), datatype_name(int(ints.min()), int(ints.max())))
        raise InputError(_where(node), f"weights {tensor!r} are not quantized: put a Quant or BipolarQuant on "
                                       "them (FINN needs integer weights)")

    def single_reader(self, tensor: str) -> bool:
        return self.readers[tensor] == 1

    def derive(self, node: onnx.NodeProto, stream: Stream, **changes) -> None:
        """Store a stream derived elementwise from `stream`; its producer stays free only on a single path."""
        if not self.single_reader(node.input[0]):
            changes.setdefault("producer", None)
        self.values[node.output[0]] = replace(stream, **changes)


# ---------------------------------------------------------------------------------------------------------
# step: quantizers -> thresholds


def _thresholds(stream: Stream, levels: np.ndarray, bound: Bound) -> np.ndarray:
    """T[c, j]: the smallest integer of channel c whose quantized value reaches level j (binary search)."""
    grid = (stream.channels, levels.size)
    lo = np.broadcast_to(np.broadcast_to(stream.lo, stream.channels)[:, None], grid).astype(np.int64)
    hi = np.broadcast_to(np.broadcast_to(stream.hi, stream.channels)[:, None], grid).astype(np.int64) + 1
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        reached = bound.to_int(stream.real(mid)) >= levels[None, :]
        hi = np.where(reached, mid, hi)
        lo = np.where(reached, lo, mid + 1)
    return lo


def _per_channel(array: np.ndarray, stream: Stream, where: str) -> np.ndarray:
    """A constant broadcast against a QONNX tensor, as one value per channel of the stream's FINN layout."""
    array = np.asarray(array, dtype=np.float64)
    if array.size == 1:
        return np.full(stream.channels, float(array.reshape(-1)[0]))
    if len(stream.shape) == 4:  # QONNX NCHW: one value per channel, (C,), (1, C, 1, 1) or (C, 1, 1)
        squeezed = array.reshape(-1) if array.ndim == 1 else array.reshape(array.shape[-3], -1)
        if squeezed.ndim == 2:
            if squeezed.shape[1] != 1:
                raise InputError(where, f"constant of shape {list(array.shape)} varies over the image; only per-"
                                        "channel or scalar constants fold into FINN thresholds")
            squeezed = squeezed[:, 0]
        if squeezed.size != stream.channels:
            raise InputError(where, f"constant of shape {list(array.shape)} does not match {stream.channels} "
                                    "channels")
        return squeezed
    flat = array.reshape(-1)
    if flat.size != stream.channels:
        raise InputError(where, f"constant of shape {list(array.shape)} does not match {stream.channels} features")
    return flat[stream.perm] if stream.perm is not None else flat


def quantize(conv: Converter, node: onnx.NodeProto, stream: Stream, quant: Quantizer) -> Stream:
    """The step that ends a chain: thresholds into the free MVAU/VVAU, or a new Thresholding node."""
    where = _where(node)
    bound = quant.bind(stream, where)
    falling = stream.direction() < 0
    producer = stream.producer
    if np.any(stream.direction() == 0):
        raise InputError(where, "a zero scale before the quantizer makes its output constant")
    if np.any(falling):
        if producer is None:
            raise InputError(where, "a negative per-channel scale before this quantizer can only be folded into "
                                    "the weights of a directly preceding Conv/MatMul/Gemm")
        stream = _negate_channels(producer, stream, falling)
    thresholds = _thresholds(stream, quant.levels(), bound).astype(np.float64)
    out_type = quant.datatype
    act_val = 0 if quant.bipolar else quant.qmin
    if producer is not None:
        producer.params["thresholds"] = thresholds
        producer.attrs.update(noActivation=0, ActVal=act_val, outputDataType=out_type)
        tensor = producer.output
    else:
        shape = stream.shape
        node_ = conv.flow.add("Thresholding", [stream.tensor], shape, {"thresholds": thresholds},
                              NumChannels=stream.channels, PE=1, numSteps=thresholds.shape[1],
                              inputDataType=stream.datatype, outputDataType=out_type,
                              weightDataType=datatype_name(int(thresholds.min()), int(thresholds.max())),
                              ActVal=act_val, numInputVectors=list(shape[:-1]))
        tensor = node_.output
    return Stream(tensor, stream.shape, np.full(stream.channels, quant.qmin), np.full(stream.channels, quant.qmax),
                  (Affine(bound.scale, bound.bias),), None, stream.perm, quant.bipolar)


def _negate_channels(producer: DataflowNode, stream: Stream, mask: np.ndarray) -> Stream:
    """Negate the weights of the output channels in `mask`, so every channel's map rises (FINN's sign move)."""
    weights = producer.params["weights"]
    if producer.op == "MVAU":
        weights[:, mask] *= -1
    else:  # VVAU: (C, 1, k, k)
        weights[mask] *= -1
    sign = np.where(mask, -1.0, 1.0)
    lo, hi = np.broadcast_to(stream.lo, stream.channels), np.broadcast_to(stream.hi, stream.channels)
    if producer.attrs.get("inputDataType") == "BIPOLAR" and producer.attrs.get("weightDataType") == "BIPOLAR":
        # an XNOR accumulator counts agreeing signs: negated weights turn a count p into MW - p
        mw = producer.attrs["MW"]
        return replace(stream, steps=(Affine(sign, np.where(mask, float(mw), 0.0)), *stream.steps))
    new_lo, new_hi = np.where(mask, -hi, lo), np.where(mask, -lo, hi)
    producer.attrs["accDataType"] = datatype_name(int(new_lo.min()), int(new_hi.max()))
    return replace(stream, lo=new_lo, hi=new_hi, steps=(Affine(sign, np.zeros_like(sign)), *stream.steps))


# ---------------------------------------------------------------------------------------------------------
# handlers: quantizers


def _quantizer(conv: Converter, node: onnx.NodeProto) -> Quantizer:
    attrs = _attrs(node)
    where = _where(node)
    scale = conv.const(node.input[1], node)
    if node.op_type == "BipolarQuant":
        return Quantizer(scale, np.zeros(1), 1, True, False)
    zero_point, bits = conv.const(node.input[2], node), conv.const(node.input[3], node)
    if bits.size != 1 or bits.reshape(-1)[0] != int(bits.reshape(-1)[0]) or bits.reshape(-1)[0] < 1:
        raise InputError(where, f"bit width must be one positive integer, got {bits.tolist()}")
    rounding = str(attrs.get("rounding_mode", "ROUND")).upper()
    if rounding not in ROUNDING_MODES:
        raise InputError(where + ".rounding_mode", f"unknown rounding mode {rounding!r}", list(ROUNDING_MODES))
    return Quantizer(scale, zero_point, int(bits.reshape(-1)[0]), bool(attrs.get("signed", 1)),
                     bool(attrs.get("narrow", 0)), rounding)


@handles("Quant", "BipolarQuant")
def _quant(conv: Converter, node: onnx.NodeProto) -> None:
    quant = _quantizer(conv, node)
    value = conv.value(node.input[0], node)
    if isinstance(value, Const | Weight):
        ints = quant.ints(value.value)
        if np.any(quant.zero_point != 0):
            raise InputError(_where(node), "weights with a non-zero zero point are not supported by FINN")
        conv.values[node.output[0]] = Weight(ints, np.asarray(quant.scale, dtype=np.float64), quant.datatype)
    elif isinstance(value, Source):
        conv.values[node.output[0]] = _dataflow_input(conv, _where(node), value, quant)
    else:
        if not conv.single_reader(node.input[0]):  # others read the accumulators: thresholds go into a new node
            value = replace(value, producer=None)
        conv.values[node.output[0]] = quantize(conv, node, value, quant)


@handles("Trunc")
def _trunc(conv: Converter, node: onnx.NodeProto) -> None:
    """Trunc after an average pool (Brevitas' TruncAvgPool): thresholds like any quantizer."""
    where = _where(node)
    if len(node.input) != 6:
        raise InputError(where, "only Trunc version 2 (inputs x, scale, zeropt, input_bit_width, output_scale, "
                                "output_bit_width) is supported")
    stream = conv.stream(node.input[0], node)
    attrs = _attrs(node)
    bits = conv.const(node.input[5], node).reshape(-1)
    rounding = str(attrs.get("rounding_mode", "FLOOR")).upper()
    if rounding not in ROUNDING_MODES:
        raise InputError(where + ".rounding_mode", f"unknown rounding mode {rounding!r}", list(ROUNDING_MODES))
    trunc = Truncation(conv.const(node.input[1], node), conv.const(node.input[2], node), int(bits[0]),
                       bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)), rounding,
                       conv.const(node.input[4], node))
    if not conv.single_reader(node.input[0]):
        stream = replace(stream, producer=None)
    conv.values[node.output[0]] = quantize(conv, node, stream, trunc)


def _dataflow_input(conv: Converter, where: str, source: Source, quant: Quantizer) -> Stream:
    """The model input's quantizer runs before the dataflow graph: its integers (NHWC) are the graph input."""
    if conv.flow.input is not None:
        raise InputError(where, "the model input is quantized twice; FINN takes one integer input")
    if len(source.shape) not in (2, 4):
        raise InputError(where, f"input of shape {list(source.shape)}: expected NCHW images or (N, K) vectors")
    shape = (1, *source.shape[2:], source.shape[1]) if len(source.shape) == 4 else (1, source.shape[1])
    stream = Stream("global_in", shape, np.zeros(1), np.zeros(1), bipolar=quant.bipolar)
    scale = _per_channel(quant.scale, stream, where)
    zero_point = _per_channel(quant.zero_point, stream, where)
    conv.preprocess = {
        "qonnx_input": source.name, "qonnx_shape": list(source.shape), "layout": "NHWC" if len(shape) == 4 else "NC",
        "prepare": list(source.prepare), "scale": scale.tolist(), "zero_point": zero_point.tolist(), "bits": quant.bits,
        "signed": quant.signed, "narrow": quant.narrow, "rounding_mode": quant.rounding, "datatype": quant.datatype,
    }
    real = Affine(scale, -scale * zero_point) if not quant.bipolar else Affine(scale, np.zeros_like(scale))
    conv.flow.input = replace(stream, lo=np.full(stream.channels, quant.qmin), hi=np.full(stream.channels, quant.qmax),
                              steps=(real,))
    return conv.flow.input


# ---------------------------------------------------------------------------------------------------------
# handlers: elementwise maps on streams


@handles("Relu")
def _relu(conv: Converter, node: onnx.NodeProto) -> None:
    value = conv.value(node.input[0], node)
    if isinstance(value, Source):
        conv.values[node.output[0]] = value.then({"op": "Relu"})
        return
    stream = conv.stream(node.input[0], node)
    conv.derive(node, stream, steps=(*stream.steps, Relu()))


@handles("BatchNormalization")
def _batchnorm(conv: Converter, node: onnx.NodeProto) -> None:
    stream = conv.stream(node.input[0], node)
    gamma, beta, mean, var = (conv.const(t, node) for t in node.input[1:5])
    eps = float(_attrs(node).get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    where = _where(node)
    step = Affine(_per_channel(scale, stream, where), _per_channel(beta - mean * scale, stream, where))
    conv.derive(node, stream, steps=(*stream.steps, step))


def _fold_constants(conv: Converter, node: onnx.NodeProto) -> bool:
    """Evaluate a node whose inputs are all constants (shape arithmetic, scale products) with ONNX's reference."""
    values = [conv.values.get(t) for t in node.input if t]
    if not all(isinstance(v, Const | Weight) for v in values):
        return False
    from onnx.reference import ReferenceEvaluator

    inputs = [helper.make_tensor_value_info(f"i{k}", TensorProto.UNDEFINED, None) for k in range(len(values))]
    outputs = [helper.make_tensor_value_info(f"o{k}", TensorProto.UNDEFINED, None) for k in range(len(node.output))]
    single = helper.make_node(node.op_type, [f"i{k}" for k in range(len(values))], [o.name for o in outputs],
                              domain=node.domain)
    single.attribute.extend(node.attribute)
    graph = helper.make_graph([single], "fold", inputs, outputs)
    opset = [o for o in conv.model.opset_import if o.domain in ("", "ai.onnx")] or [helper.make_opsetid("", 13)]
    feeds = {}
    for k, (tensor, v) in enumerate(zip([t for t in node.input if t], values, strict=True)):
        feeds[f"i{k}"] = v.value.astype(_const_dtype(conv, tensor))
    results = ReferenceEvaluator(helper.make_model(graph, opset_imports=opset)).run(None, feeds)
    for name, result in zip(node.output, results, strict=True):
        conv.values[name] = Const(np.asarray(result).astype(np.float64))
    return True


def _const_dtype(conv: Converter, tensor: str) -> type:
    """Shape arithmetic wants int64 (Reshape, Gather indices); everything else is float."""
    for init in conv.model.graph.initializer:
        if init.name == tensor and init.data_type == TensorProto.INT64:
            return np.int64
    return np.int64 if tensor in conv.int_tensors else np.float32


def _binary_operands(conv: Converter, node: onnx.NodeProto) -> tuple[Stream, np.ndarray, bool]:
    """(stream, constant, stream_first) of an elementwise op with one stream and one constant input."""
    first, second = (conv.value(t, node) for t in node.input[:2])
    if isinstance(first, Stream) and isinstance(second, Const | Weight):
        return first, second.value, True
    if isinstance(second, Stream) and isinstance(first, Const | Weight):
        return second, first.value, False
    conv.stream(node.input[0] if not isinstance(first, Stream) else node.input[1], node)  # names the bad input
    raise InputError(_where(node), "expected one activation stream and one constant")


@handles("Mul", "Div", "Add", "Sub")
def _arith(conv: Converter, node: onnx.NodeProto) -> None:
    if _fold_constants(conv, node):
        return
    if node.op_type == "Add" and all(isinstance(conv.values.get(t), Stream) for t in node.input[:2]):
        _add_streams(conv, node)
        return
    if isinstance(conv.values.get(node.input[0]), Source):
        _prepare_input(conv, node)
        return
    stream, constant, stream_first = _binary_operands(conv, node)
    c = _per_channel(constant, stream, _where(node))
    op = node.op_type
    if op == "Div" and not stream_first:
        raise InputError(_where(node), "dividing a constant by an activation is not an affine map")
    if op in ("Mul", "Div") and np.any(c == 0):
        raise InputError(_where(node), "multiplying or dividing by zero is not an invertible map")
    zeros, ones = np.zeros_like(c), np.ones_like(c)
    if op in ("Mul", "Div"):
        step = Affine(c if op == "Mul" else 1.0 / c, zeros)
    else:
        step = Affine(ones, c) if op == "Add" else Affine(ones, -c) if stream_first else Affine(-ones, c)
    conv.derive(node, stream, steps=(*stream.steps, step))


def _prepare_input(conv: Converter, node: onnx.NodeProto) -> None:
    """Float arithmetic on the model input before its quantizer (Brevitas' `2x - 1` of BNN inputs)."""
    source = conv.values[node.input[0]]
    c = conv.const(node.input[1], node)
    step = {"Mul": ("Mul", c), "Div": ("Mul", 1.0 / c), "Add": ("Add", c), "Sub": ("Add", -c)}[node.op_type]
    conv.values[node.output[0]] = source.then({"op": step[0], "value": np.asarray(step[1]).tolist()})


def _add_streams(conv: Converter, node: onnx.NodeProto) -> None:
    """Residual add: both streams must share one scale per channel; their biases add up."""
    a, b = (conv.stream(t, node) for t in node.input[:2])
    where = _where(node)
    if a.shape != b.shape:
        raise InputError(where, f"adds streams of shapes {list(a.shape)} and {list(b.shape)}")
    (sa, ba), (sb, bb) = a.affine(where), b.affine(where)
    if not np.allclose(sa, sb, rtol=1e-6, atol=0):
        raise InputError(where, "the two inputs have different quantization scales; FINN's AddStreams adds "
                                "integers, so quantize both inputs with one scale (a shared quantizer)")
    lo = np.minimum(np.broadcast_to(a.lo, a.channels), np.broadcast_to(b.lo, b.channels))
    hi = np.maximum(np.broadcast_to(a.hi, a.channels), np.broadcast_to(b.hi, b.channels))
    in_type = datatype_name(int(lo.min()), int(hi.max()))
    added = conv.flow.add("AddStreams", [a.tensor, b.tensor], a.shape, NumChannels=a.channels, PE=1,
                          inputDataType=in_type, numInputVectors=list(a.shape[:-1]))
    lo2 = np.broadcast_to(a.lo, a.channels) + np.broadcast_to(b.lo, b.channels)
    hi2 = np.broadcast_to(a.hi, a.channels) + np.broadcast_to(b.hi, b.channels)
    conv.values[node.output[0]] = Stream(added.output, a.shape, lo2, hi2, (Affine(sa, ba + bb),), None, a.perm)


# ---------------------------------------------------------------------------------------------------------
# handlers: convolutions and matrix products


def _input_scale(stream: Stream, where: str) -> tuple[float, np.ndarray]:
    scale, bias = stream.affine(where)
    if not np.allclose(scale, scale[0], rtol=1e-6, atol=0):
        raise InputError(where, "its input has a per-channel scale; FINN needs one scale for a whole MVAU input "
                                "(quantize the activation per tensor)")
    return float(scale[0]), bias


def _acc_range(weights: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output column of (K, N) weights: the accumulator range over inputs in [lo, hi] (per row)."""
    a, b = weights * lo[:, None], weights * hi[:, None]
    return np.minimum(a, b).sum(axis=0), np.maximum(a, b).sum(axis=0)


def _out_scale(weight: Weight, channels: int, axis: int, where: str) -> np.ndarray:
    """The weight scale as one value per output channel (`axis` of the weight tensor)."""
    scale = np.broadcast_to(weight.scale, weight.ints.shape)
    per_out = np.moveaxis(scale, axis, 0).reshape(channels, -1)
    if not np.allclose(per_out, per_out[:, :1], rtol=1e-6, atol=0):
        raise InputError(where, "weight scale varies within an output channel; FINN needs per-channel scales")
    return per_out[:, 0].copy()


def _mvau(conv: Converter, source: Stream, matrix: np.ndarray, wtype: str, in_scale: float, in_bias: np.ndarray,
          w_scale: np.ndarray, bias: np.ndarray, shape: tuple[int, ...], tensor: str) -> Stream:
    """An MVAU without activation over `tensor`; its stream keeps it free to take the next thresholds."""
    lo = np.broadcast_to(source.lo, source.channels)
    hi = np.broadcast_to(source.hi, source.channels)
    reps = matrix.shape[0] // source.channels
    acc_lo, acc_hi = _acc_range(matrix, np.tile(lo, reps), np.tile(hi, reps))
    scale, offset = in_scale * w_scale, w_scale * (matrix.T @ np.tile(in_bias, reps)) + bias
    if source.bipolar and wtype == "BIPOLAR":
        # FINN's MVAU multiplies two BIPOLAR operands by XNOR: its accumulator counts agreeing signs,
        # p = (s + MW) / 2 for the sign-product sum s, so s = 2p - MW feeds the real-value map
        mw = matrix.shape[0]
        acc_lo, acc_hi = np.zeros(matrix.shape[1]), np.full(matrix.shape[1], mw)
        scale, offset = 2 * scale, offset - scale * mw
    acc_type = datatype_name(int(acc_lo.min()), int(acc_hi.max()))
    node = conv.flow.add("MVAU", [tensor], shape, {"weights": matrix.astype(np.float64)}, MW=matrix.shape[0],
                         MH=matrix.shape[1], SIMD=1, PE=1, numInputVectors=list(shape[:-1]),
                         inputDataType=source.datatype, weightDataType=wtype, outputDataType=acc_type,
                         accDataType=acc_type, noActivation=1,
                         ActVal=0, binaryXnorMode=0, mem_mode="internal_decoupled", resType="auto")
    return Stream(node.output, shape, acc_lo, acc_hi, (Affine(scale, offset),), node)


def _conv_attrs(node: onnx.NodeProto, kernel: tuple[int, int]) -> tuple[int, list[int]]:
    attrs = _attrs(node)
    where = _where(node)
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise InputError(where + ".auto_pad", "only explicit pads are supported", ["NOTSET"])
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise InputError(where + ".dilations", "dilated convolutions are not supported", [[1, 1]])
    strides = attrs.get("strides", [1, 1])
    if kernel[0] != kernel[1] or strides[0] != strides[1]:
        raise InputError(where, f"non-square kernel {list(kernel)} or strides {strides}: FINN's square-image "
                                "layers need square kernels and strides")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return int(strides[0]), [pads[0], pads[1], pads[2], pads[3]]


def _pad(conv: Converter, stream: Stream, pads: list[int], where: str) -> tuple[str, int, int]:
    """FMPadding when pads are non-zero; integer 0 must then mean real 0 (no zero point on the input)."""
    _, h, w, c = stream.shape
    if not any(pads):
        return stream.tensor, h, w
    _, bias = stream.affine(where)
    if np.any(bias != 0):
        raise InputError(where, "zero padding of an input with a zero point (or bias) is not supported: the padded "
                                "integer 0 would not mean 0")
    top, left, bottom, right = pads
    ph, pw = h + top + bottom, w + left + right
    node = conv.flow.add("FMPadding", [stream.tensor], (1, ph, pw, c), ImgDim=[h, w],
                         Padding=[top, left, bottom, right], NumChannels=c, SIMD=1,
                         inputDataType=stream.datatype, numInputVectors=1)
    return node.output, ph, pw


def _swg(conv: Converter, stream: Stream, tensor: str, h: int, w: int, k: int, stride: int, depthwise: bool,
         ) -> tuple[str, int, int]:
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    node = conv.flow.add("ConvolutionInputGenerator", [tensor], (1, oh, ow, k * k * stream.channels),
                         ConvKernelDim=[k, k], IFMChannels=stream.channels, IFMDim=[h, w], OFMDim=[oh, ow], SIMD=1,
                         Stride=[stride, stride], Dilation=[1, 1], inputDataType=stream.datatype,
                         outputDataType=stream.datatype, depthwise=int(depthwise), ram_style="auto")
    return node.output, oh, ow


@handles("Conv")
def _conv(conv: Converter, node: onnx.NodeProto) -> None:
    where = _where(node)
    x = conv.stream(node.input[0], node)
    weight = conv.weight(node.input[1], node)
    if len(x.shape) != 4 or weight.ints.ndim != 4:
        raise InputError(where, "only 2D convolutions over NCHW images are supported")
    oc, icg, kh, kw = weight.ints.shape
    stride, pads = _conv_attrs(node, (kh, kw))
    group = int(_attrs(node).get("group", 1))
    bias = conv.const(node.input[2], node).reshape(-1) if len(node.input) > 2 and node.input[2] else np.zeros(oc)
    depthwise = group > 1
    if depthwise and not (group == x.channels == oc and icg == 1):
        raise InputError(where + ".group", f"grouped convolution with group={group}: only depthwise "
                                            f"(group = channels = {x.channels}) or group=1 are supported")
    w_scale = _out_scale(weight, oc, 0, where)
    subpixel = _depth_to_space_reader(conv, node)
    if subpixel is not None and not depthwise:
        conv.values[subpixel.output[0]] = _subpixel(conv, x, weight, w_scale, bias, kh, stride, pads, subpixel)
        return
    if depthwise:
        conv.values[node.output[0]] = _vvau(conv, x, weight, w_scale, bias, kh, stride, pads, where)
        return
    in_scale, in_bias = _input_scale(x, where)
    matrix = weight.ints.transpose(2, 3, 1, 0).reshape(kh * kw * icg, oc)  # rows in SWG order (kh, kw, c)
    tensor, h, w = _pad(conv, x, pads, where)
    if kh == 1 and stride == 1:
        oh, ow = h, w
    elif kh == 1:
        oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
        tensor = conv.flow.add("DownSampler", [tensor], (1, oh, ow, x.channels), ImgDim=h, NumChannels=x.channels,
                               SIMD=1, Stride=stride, inputDataType=x.datatype, numInputVectors=1).output
    else:
        tensor, oh, ow = _swg(conv, x, tensor, h, w, kh, stride, False)
    out = _mvau(conv, x, matrix, weight.datatype, in_scale, in_bias, w_scale, bias, (1, oh, ow, oc), tensor)
    conv.values[node.output[0]] = out


def _depth_to_space_reader(conv: Converter, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The DepthToSpace that alone reads this Conv's output (together: a sub-pixel convolution), if any."""
    readers = [n for n in conv.model.graph.node if node.output[0] in n.input]
    return readers[0] if len(readers) == 1 and readers[0].op_type == "DepthToSpace" else None


def _subpixel(conv: Converter, x: Stream, weight: Weight, w_scale: np.ndarray, bias: np.ndarray, k: int, stride: int,
              pads: list[int], d2s: onnx.NodeProto) -> Stream:
    """Conv + DepthToSpace(b) as FINN builds it: qonnx's SubPixelToDeconvolution turns it into a transposed
    convolution (kernel k·b, stride b), FINN's InferPixelPaddingDeconv that into FMPadding_Pixel (stride b) +
    FMPadding + SWG (k·b, stride 1) + MVAU, whose weights are the sub-pixel kernels spread over the k·b window:
    W[c, :, b·kh + b-1-i, b·kw + b-1-j] = sub-pixel kernel (kh, kw) of output pixel offset (i, j) of channel c."""
    where = f"{_where(d2s)} after {x.tensor}"
    b, mode = int(_attrs(d2s).get("blocksize", 0)), str(_attrs(d2s).get("mode", "DCR")).upper()
    oc, ic = weight.ints.shape[:2]
    if b < 2 or oc % (b * b) or mode not in ("CRD", "DCR"):
        raise InputError(where, f"blocksize {b}, mode {mode} for {oc} channels: needs blocksize >= 2 dividing the "
                                "channels as b², mode CRD or DCR")
    if stride != 1 or len(set(pads)) != 1 or 2 * pads[0] != k - 1:
        raise InputError(where, f"the convolution before it (kernel {k}, stride {stride}, pads {pads}) must be "
                                "same-padded with stride 1 to be a sub-pixel convolution (as qonnx's "
                                "SubPixelToDeconvolution requires)")
    c = oc // (b * b)
    # sub-pixel channel of (c, i, j): CRD c·b² + i·b + j, DCR (i·b + j)·C + c
    order = np.arange(oc).reshape(c, b, b) if mode == "CRD" else np.arange(oc).reshape(b, b, c).transpose(2, 0, 1)
    order = order.reshape(-1)
    scale, offset = w_scale[order].reshape(c, b * b), bias[order].reshape(c, b * b)
    if not (np.allclose(scale, scale[:, :1], rtol=1e-6, atol=0) and np.all(offset == offset[:, :1])):
        raise InputError(where, "weight scales or biases differ between the sub-pixels of one output channel; a "
                                "transposed convolution has one per channel")
    kernels = weight.ints[order].reshape(c, b, b, ic, k, k)
    spread = np.zeros((c, ic, k * b, k * b))
    for i in range(b):
        for j in range(b):
            spread[:, :, b - 1 - i::b, b - 1 - j::b] = kernels[:, i, j]
    in_scale, in_bias = _input_scale(x, where)
    if np.any(in_bias != 0):
        raise InputError(where, "pixel padding an input with a zero point (or bias) is not supported: the inserted "
                                "integer 0 would not mean 0")
    _, h, w, _ = x.shape
    size = h + (h - 1) * (b - 1)
    spaced = conv.flow.add("FMPadding_Pixel", [x.tensor], (1, size, size, ic), ImgDim=[h, w], Stride=[b, b],
                           NumChannels=ic, SIMD=1, inputDataType=x.datatype, numInputVectors=1)
    x = replace(x, tensor=spaced.output, shape=(1, size, size, ic), producer=None)
    tensor, ph, pw = _pad(conv, x, [k * b - 1 - pads[0] * b] * 4, where)
    tensor, oh, ow = _swg(conv, x, tensor, ph, pw, k * b, 1, False)
    matrix = spread.transpose(2, 3, 1, 0).reshape(k * b * k * b * ic, c)  # rows in SWG order (kh, kw, c)
    return _mvau(conv, x, matrix, weight.datatype, in_scale, in_bias, scale[:, 0], offset[:, 0], (1, oh, ow, c),
                 tensor)


@handles("DepthToSpace")
def _depth_to_space(conv: Converter, node: onnx.NodeProto) -> None:
    """Computed with the Conv before it (see _subpixel); anywhere else FINN has no layer for it."""
    if node.output[0] not in conv.values:
        raise InputError(_where(node), "DepthToSpace is supported only right after a Conv that nothing else reads "
                                       "(a sub-pixel convolution, which FINN builds as a transposed convolution)")


def _vvau(conv: Converter, x: Stream, weight: Weight, w_scale: np.ndarray, bias: np.ndarray, k: int, stride: int,
          pads: list[int], where: str) -> Stream:
    """Depthwise conv: SWG(depthwise) + VVAU. A per-channel input scale folds into each channel's output scale."""
    in_scale, in_bias = x.affine(where)
    tensor, h, w = _pad(conv, x, pads, where)
    tensor, oh, ow = _swg(conv, x, tensor, h, w, k, stride, True)
    c = x.channels
    taps = weight.ints.reshape(c, k * k)
    lo, hi = np.broadcast_to(x.lo, c)[:, None], np.broadcast_to(x.hi, c)[:, None]
    acc_lo = np.minimum(taps * lo, taps * hi).sum(axis=1)
    acc_hi = np.maximum(taps * lo, taps * hi).sum(axis=1)
    acc_type = datatype_name(int(acc_lo.min()), int(acc_hi.max()))
    node = conv.flow.add("VVAU", [tensor], (1, oh, ow, c), {"weights": weight.ints.astype(np.float64).copy()},
                         Channels=c, Kernel=[k, k], Dim=[oh, ow], PE=1, SIMD=1, inputDataType=x.datatype,
                         weightDataType=weight.datatype, outputDataType=acc_type, accDataType=acc_type,
                         noActivation=1, ActVal=0, resType="auto", mem_mode="internal_embedded")
    offset = w_scale * taps.sum(axis=1) * in_bias + bias
    return Stream(node.output, (1, oh, ow, c), acc_lo, acc_hi, (Affine(in_scale * w_scale, offset),), node)


@handles("MatMul", "Gemm")
def _matmul(conv: Converter, node: onnx.NodeProto) -> None:
    if _fold_constants(conv, node):
        return
    where = _where(node)
    attrs = _attrs(node)
    x = _flat(conv.stream(node.input[0], node), where)
    weight = conv.weight(node.input[1], node)
    if attrs.get("transA", 0):
        raise InputError(where + ".transA", "a transposed activation input is not supported", [0])
    ints, scale = weight.ints, np.broadcast_to(weight.scale, weight.ints.shape)
    if attrs.get("transB", 0):
        ints, scale = ints.T, scale.T
    if ints.ndim != 2 or ints.shape[0] != x.channels:
        raise InputError(where, f"weights of shape {list(weight.ints.shape)} do not fit {x.channels} input features")
    n = ints.shape[1]
    w_scale = _out_scale(Weight(ints, scale, weight.datatype), n, 1, where) * float(attrs.get("alpha", 1.0))
    bias = np.zeros(n)
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = np.broadcast_to(conv.const(node.input[2], node).reshape(-1), n) * float(attrs.get("beta", 1.0))
    in_scale, in_bias = _input_scale(x, where)
    matrix = ints[x.perm] if x.perm is not None else ints  # rows follow the stream's NHWC order
    conv.values[node.output[0]] = _mvau(conv, x, matrix, weight.datatype, in_scale, in_bias, w_scale, bias, (1, n),
                                        x.tensor)


# ---------------------------------------------------------------------------------------------------------
# handlers: layout


def _flat(stream: Stream, where: str) -> Stream:
    """The stream as (1, K) features in NHWC order; `perm` remembers QONNX's NCHW index of each position."""
    if len(stream.shape) == 2:
        return stream
    _, h, w, c = stream.shape
    reps = h * w
    perm = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1) if reps > 1 else None

    def expand(array):
        array = np.asarray(array)
        return np.tile(array, reps) if array.size == c and c > 1 else array

    steps = tuple(Affine(expand(s.scale), expand(s.bias)) if isinstance(s, Affine) else s for s in stream.steps)
    # in FINN no node does this: the stream of (H, W, C) values is already the flat vector
    return replace(stream, shape=(1, h * w * c), lo=expand(stream.lo), hi=expand(stream.hi), steps=steps, perm=perm,
                   producer=None if reps > 1 else stream.producer)


@handles("Flatten", "Reshape")
def _reshape(conv: Converter, node: onnx.NodeProto) -> None:
    if _fold_constants(conv, node):
        return
    source = conv.values.get(node.input[0])
    if isinstance(source, Source) and len(source.shape) == 4:
        size = int(np.prod(source.shape[1:]))
        conv.values[node.output[0]] = source.then({"op": "Flatten"}, (source.shape[0], size))
        return
    stream = conv.stream(node.input[0], node)
    where = _where(node)
    if node.op_type == "Reshape":
        target = conv.const(node.input[1], node).astype(np.int64).reshape(-1).tolist()
        size = int(np.prod(stream.shape))
        if len(target) != 2 or target[0] not in (1, -1) or target[1] not in (-1, size):
            raise InputError(where, f"reshape to {target}: only flattening to (1, {size}) is supported")
    elif int(_attrs(node).get("axis", 1)) != 1:
        raise InputError(where + ".axis", "only Flatten(axis=1) is supported", [1])
    conv.derive(node, _flat(stream, where))


@handles("Transpose")
def _transpose(conv: Converter, node: onnx.NodeProto) -> None:
    """Transposed weights (MatMul exports) keep their integers and scales; activations stay in FINN's layout."""
    value = conv.value(node.input[0], node)
    perm = _attrs(node).get("perm")
    if isinstance(value, Weight):
        scale = np.broadcast_to(value.scale, value.ints.shape)
        conv.values[node.output[0]] = Weight(value.ints.transpose(perm), scale.transpose(perm), value.datatype)
    elif not _fold_constants(conv, node):
        raise InputError(_where(node), "transposing activations is not supported: FINN streams keep NHWC order "
                                       "and Flatten/Reshape handle the layout")


@handles("Identity", "Dropout")
def _identity(conv: Converter, node: onnx.NodeProto) -> None:
    conv.values[node.output[0]] = conv.value(node.input[0], node)


@handles("Constant")
def _constant(conv: Converter, node: onnx.NodeProto) -> None:
    attrs = _attrs(node)
    if "value" not in attrs:
        raise InputError(_where(node), "only Constant nodes with a tensor `value` are supported")
    conv.values[node.output[0]] = Const(numpy_helper.to_array(attrs["value"]).astype(np.float64))


@handles("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice")
def _shape_arithmetic(conv: Converter, node: onnx.NodeProto) -> None:
    """Shape arithmetic around flattening (`x.view(x.size(0), -1)`): folded to constants."""
    if node.op_type == "Shape":
        value = conv.value(node.input[0], node)
        if isinstance(value, Stream):
            shape = _qonnx_shape(value)
        else:
            shape = np.asarray(value.shape if isinstance(value, Source) else np.shape(value.value))
        conv.values[node.output[0]] = Const(np.asarray(shape, dtype=np.float64))
        conv.int_tensors.add(node.output[0])
        return
    if not _fold_constants(conv, node):
        raise InputError(_where(node), "only supported on constants (shape arithmetic)")
    if node.op_type in ("Gather", "Unsqueeze", "Squeeze", "Concat", "Slice") and any(
            t in conv.int_tensors for t in node.input):
        conv.int_tensors.update(node.output)


def _qonnx_shape(stream: Stream) -> np.ndarray:
    if len(stream.shape) == 4:
        _, h, w, c = stream.shape
        return np.array([1, c, h, w])
    return np.array(stream.shape)


# ---------------------------------------------------------------------------------------------------------
# handlers: pooling


def _pool_attrs(node: onnx.NodeProto, stream: Stream) -> tuple[int, int]:
    where = _where(node)
    if len(stream.shape) != 4:
        raise InputError(where, "pooling needs an NCHW image stream")
    if node.op_type == "GlobalAveragePool":
        _, h, w, _ = stream.shape
        if h != w:
            raise InputError(where, f"global pooling over a {h}x{w} image: FINN's pool needs square images")
        return h, h
    attrs = _attrs(node)
    kernel = attrs.get("kernel_shape", [])
    strides = attrs.get("strides", kernel)
    if any(attrs.get("pads", [0])) or attrs.get("ceil_mode", 0) or attrs.get("auto_pad", "NOTSET") not in ("NOTSET",
                                                                                                          ""):
        raise InputError(where, "padded or ceil-mode pooling is not supported")
    if len(kernel) != 2 or kernel[0] != kernel[1] or strides[0] != strides[1]:
        raise InputError(where, f"kernel {kernel} / strides {strides}: FINN's pools need square kernels")
    return int(kernel[0]), int(strides[0])


@handles("MaxPool")
def _maxpool(conv: Converter, node: onnx.NodeProto) -> None:
    """The max of the integers is the max of the real values when every channel's map rises."""
    x = conv.stream(node.input[0], node)
    where = _where(node)
    k, stride = _pool_attrs(node, x)
    if np.any(x.direction() <= 0):
        raise InputError(where, "max pooling after a negative scale is not supported")
    _, h, w, c = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    if k == stride and h % k == 0 and w % k == 0:
        out = conv.flow.add("StreamingMaxPool", [x.tensor], (1, oh, ow, c), ImgDim=[h, w], PoolDim=[k, k],
                            NumChannels=c, PE=1, CeilMode=0, dataType=x.datatype)
    else:
        tensor, oh, ow = _swg(conv, x, x.tensor, h, w, k, stride, True)
        out = _pool_node(conv, tensor, c, k, oh, ow, "MaxPool", x.datatype, x.datatype)
    conv.values[node.output[0]] = replace(x, tensor=out.output, shape=(1, oh, ow, c), producer=None)


def _pool_node(conv: Converter, tensor: str, c: int, k: int, oh: int, ow: int, function: str, in_type: str,
               out_type: str) -> DataflowNode:
    return conv.flow.add("Pool", [tensor], (1, oh, ow, c), Channels=c, PE=1, KernelSize=[k, k], Function=function,
                         OutImgDims=[oh, ow], InputDataType=in_type, OutputDataType=out_type)


@handles("AveragePool", "GlobalAveragePool")
def _avgpool(conv: Converter, node: onnx.NodeProto) -> None:
    """SWG + Pool(QuantAvgPool) with an output wide enough to need no shift: it sums, 1/k² joins the map."""
    x = conv.stream(node.input[0], node)
    where = _where(node)
    k, stride = _pool_attrs(node, x)
    scale, bias = x.affine(where)
    if np.min(x.lo) < 0:
        raise InputError(where, "average pooling of signed values is not supported (FINN's QuantAvgPool is "
                                "unsigned here)")
    _, h, w, c = x.shape
    tensor, oh, ow = _swg(conv, x, x.tensor, h, w, k, stride, True)
    in_max = 2 ** max(int(np.max(x.hi)).bit_length(), 1) - 1
    out_bits = (in_max * k * k).bit_length()
    out = _pool_node(conv, tensor, c, k, oh, ow, "QuantAvgPool", x.datatype, f"UINT{out_bits}")
    conv.values[node.output[0]] = Stream(out.output, (1, oh, ow, c), k * k * np.broadcast_to(x.lo, c),
                                         k * k * np.broadcast_to(x.hi, c), (Affine(scale / (k * k), bias),))


# ---------------------------------------------------------------------------------------------------------
# handlers: upsampling


@handles("Resize", "Upsample")
def _upsample(conv: Converter, node: onnx.NodeProto) -> None:
    """UpsampleNearestNeighbour, as FINN's InferUpsample maps a nearest-neighbour Resize by an integer factor of
    a square image; it moves integers, so the stream's map to real values stays."""
    x = conv.stream(node.input[0], node)
    where = _where(node)
    if len(x.shape) != 4 or x.shape[1] != x.shape[2]:
        raise InputError(where, f"upsampling a stream of shape {list(_qonnx_shape(x))}: FINN's "
                                "UpsampleNearestNeighbour takes square NCHW images")
    if str(_attrs(node).get("mode", "nearest")) != "nearest":
        raise InputError(where + ".mode", f"mode {_attrs(node)['mode']!r} is not supported", ["nearest"])
    _, h, _, c = x.shape
    factor = _upsample_factor(conv, node, h, c)
    out = conv.flow.add("UpsampleNearestNeighbour", [x.tensor], (1, h * factor, h * factor, c), OFMDim=h * factor,
                        IFMDim=h, NumChannels=c, inputDataType=x.datatype, numInputVectors=1, DimMode=0)
    conv.values[node.output[0]] = replace(x, tensor=out.output, shape=(1, h * factor, h * factor, c), producer=None)


def _upsample_factor(conv: Converter, node: onnx.NodeProto, size: int, channels: int) -> int:
    """The integer factor s by which the node upsamples a size x size NCHW image, checked to map pixel
    (y // s, x // s) to (y, x) by running the node itself (its coordinate transformation and rounding modes, its
    roi) on an image of pixel indices with ONNX's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    where = _where(node)
    # Resize: X, roi, scales, sizes (opset 11+) or X, scales (opset 10); Upsample: X, scales (or an attribute)
    inputs = list(node.input)
    sizes_at = 3 if node.op_type == "Resize" and len(inputs) > 3 and inputs[3] else None
    scales_at = 2 if node.op_type == "Resize" and len(inputs) > 2 else 1
    if sizes_at is not None:
        sizes = conv.const(inputs[sizes_at], node).reshape(-1)
        factors = sizes / np.array([1, channels, size, size]) if sizes.size == 4 else sizes
    elif scales_at < len(inputs) and inputs[scales_at]:
        factors = conv.const(inputs[scales_at], node).reshape(-1)
    else:
        factors = np.asarray(_attrs(node).get("scales", []), dtype=np.float64)
    if (factors.size != 4 or np.any(factors[:2] != 1) or factors[2] != factors[3] or factors[2] != int(factors[2])
            or factors[2] < 2):
        raise InputError(where, f"scales {factors.tolist()}: FINN's UpsampleNearestNeighbour needs one integer "
                                "factor >= 2 for height and width, and 1 for batch and channels")
    factor = int(factors[2])
    pixels = np.arange(size * size, dtype=np.float32).reshape(1, 1, size, size)
    feeds, names = {"x": pixels}, ["x"]
    for k, tensor in enumerate(inputs[1:], start=1):
        if not tensor:
            names.append("")
            continue
        value = conv.const(tensor, node)
        if k == sizes_at:  # one channel of pixel indices stands for all channels
            value = np.array([1, 1, size * factor, size * factor])
        names.append(f"c{k}")
        feeds[f"c{k}"] = value.astype(np.int64 if k == sizes_at else np.float32)
    single = helper.make_node(node.op_type, names, ["y"])
    single.attribute.extend(node.attribute)
    graph = helper.make_graph([single], "upsample", [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None)
                                                     for n in names if n],
                              [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)])
    opset = [o for o in conv.model.opset_import if o.domain in ("", "ai.onnx")] or [helper.make_opsetid("", 13)]
    got = ReferenceEvaluator(helper.make_model(graph, opset_imports=opset)).run(None, feeds)[0]
    if not np.array_equal(got, pixels.repeat(factor, axis=2).repeat(factor, axis=3)):
        raise InputError(where, "its coordinate transformation and rounding modes do not copy pixel (y // s, x // s) "
                                "to (y, x): FINN's UpsampleNearestNeighbour repeats each pixel s x s times")
    return factor


# ---------------------------------------------------------------------------------------------------------
# handlers: label selection


@handles("TopK", "ArgMax")
def _topk(conv: Converter, node: onnx.NodeProto) -> None:
    """LabelSelect: the top-k of the integers is the top-k of the real values under one rising map."""
    where = _where(node)
    x = _flat(conv.stream(node.input[0], node), where)
    scale, bias = x.affine(where)
    if np.any(scale <= 0) or not np.allclose(scale, scale[0]) or not np.allclose(bias, bias[0]):
        raise InputError(where, "top-k needs one positive scale and one bias for all classes (FINN absorbs only "
                                "scalar Mul/Add into TopK)")
    attrs = _attrs(node)
    if node.op_type == "TopK":
        k = int(conv.const(node.input[1], node).reshape(-1)[0])
        if attrs.get("largest", 1) != 1 or int(attrs.get("axis", -1)) not in (-1, 1):
            raise InputError(where, "only TopK(largest=1) over the class axis is supported")
        if len(node.output) > 1 and node.output[0] and conv.readers[node.output[0]]:
            raise InputError(where, "the TopK values output is used; FINN's LabelSelect returns indices only")
        out_name = node.output[1] if len(node.output) > 1 else node.output[0]
    else:
        k = 1
        if attrs.get("select_last_index", 0) or int(attrs.get("axis", 0)) not in (-1, 1):
            raise InputError(where, "only ArgMax over the class axis is supported")
        out_name = node.output[0]
    if x.perm is not None:
        raise InputError(where, "top-k over a flattened image is not supported")
    labels = x.channels
    out_type = datatype_name(0, labels - 1)
    out = conv.flow.add("LabelSelect", [x.tensor], (1, k), Labels=labels, PE=1, K=k, inputDataType=x.datatype,
                        outputDataType=out_type)
    conv.values[out_name] = Stream(out.output, (1, k), np.zeros(1), np.full(1, labels - 1),
                                   (Affine(np.ones(1), np.zeros(1)),))
    conv.labels.add(out_name)


# ---------------------------------------------------------------------------------------------------------
# steps after the handlers


def insert_duplicate_streams(flow: Dataflow, outputs: list[str]) -> None:
    """A stream read by several nodes gets a DuplicateStreams with one output per reader, as in FINN."""
    readers: dict[str, list[tuple[DataflowNode, int]]] = {}
    for node in flow.nodes:
        for i, tensor in enumerate(node.inputs):
            readers.setdefault(tensor, []).append((node, i))
    for tensor, uses in readers.items():
        if len(uses) + outputs.count(tensor) < 2:
            continue
        if tensor in outputs:
            raise InputError(f"tensor {tensor}", "a graph output that other layers also read is not supported")
        producer = next((n for n in flow.nodes if n.output == tensor), None)
        shape = producer.shape if producer else flow.input.shape
        dtype = _output_type(producer) if producer else flow.input.datatype
        name = flow.next_name("DuplicateStreams")
        dup = DataflowNode("DuplicateStreams", name, [tensor], [f"{name}_out{i}" for i in range(len(uses))],
                           dict(NumChannels=shape[-1], PE=1, inputDataType=dtype, NumOutputStreams=len(uses),
                                numInputVectors=list(shape[:-1])), shape)
        for (node, i), out in zip(uses, dup.outputs, strict=True):
            node.inputs[i] = out
        flow.nodes.insert(flow.nodes.index(producer) + 1 if producer else 0, dup)


def _output_type(node: DataflowNode) -> str:
    if node.op == "StreamingMaxPool":
        return node.attrs["dataType"]
    if node.op in ("AddStreams",):
        return _add_output_type(node.attrs["inputDataType"])
    if node.op in ("FMPadding", "FMPadding_Pixel", "DownSampler", "ConvolutionInputGenerator",
                   "UpsampleNearestNeighbour"):
        return node.attrs["inputDataType"]
    return node.attrs["OutputDataType" if node.op == "Pool" else "outputDataType"]


def _add_output_type(in_type: str) -> str:
    """FINN's AddStreams output: the smallest type of twice the input range."""
    bits = int("".join(ch for ch in in_type if ch.isdigit()) or 1)
    if in_type.startswith("INT"):
        return datatype_name(-(2**bits), 2**bits - 2)
    hi = 1 if in_type in ("BINARY", "BIPOLAR") else 2**bits - 1
    return datatype_name(0, 2 * hi)


def _value_info(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _annotate(graph: onnx.GraphProto, tensor: str, datatype: str) -> None:
    """FINN's tensor datatype annotation (quantization_annotation, key finn_datatype)."""
    annotation = onnx.TensorAnnotation(tensor_name=tensor)
    annotation.quant_parameter_tensor_names.append(onnx.StringStringEntryProto(key="finn_datatype", value=datatype))
    graph.quantization_annotation.append(annotation)


def build_model(flow: Dataflow, outputs: list[tuple[str, Stream]], name: str, metadata: dict) -> onnx.ModelProto:
    nodes, inits, infos = [], [], []
    for node in flow.nodes:
        inputs = list(node.inputs)
        for role, array in node.params.items():
            init_name = f"{node.name}_{role}"
            inits.append(numpy_helper.from_array(array.astype(np.float32), init_name))
            inputs.append(init_name)
        nodes.append(helper.make_node(f"{node.op}_hls", inputs, node.outputs, name=node.name, domain=HLS_DOMAIN,
                                      backend="fpgadataflow", **node.attrs))
        infos.extend(_value_info(o, node.shape) for o in node.outputs)
    out_names = {t for t, _ in outputs}
    graph = helper.make_graph(nodes, name, [_value_info(flow.input.tensor, flow.input.shape)],
                              [_value_info(t, s.shape) for t, s in outputs], initializer=inits,
                              value_info=[v for v in infos if v.name not in out_names])
    _annotate(graph, flow.input.tensor, flow.input.datatype)
    for tensor, stream in outputs:
        _annotate(graph, tensor, stream.datatype)
    model = helper.make_model(graph, producer_name="elasticdf-qonnx-import",
                              opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(HLS_DOMAIN, 1)])
    helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata)})
    return model


# ---------------------------------------------------------------------------------------------------------
# entry point


def is_qonnx(model: onnx.ModelProto) -> bool:
    """Whether a model is QONNX (has a Quant/BipolarQuant/Trunc node), for detecting the format from content."""
    return any(n.op_type in ("Quant", "BipolarQuant", "Trunc") and n.domain in QUANT_DOMAINS for n in model.graph.node)


def import_qonnx(model: onnx.ModelProto, input_datatype: str | None = None) -> onnx.ModelProto:
    """The FINN dataflow ONNX equivalent of a QONNX model; raises InputError for anything FINN cannot map.

    The model input is quantized by its own Quant/BipolarQuant; a model whose first layer reads the float
    input directly (Brevitas' MobileNet) needs `input_datatype` (e.g. "UINT8"): the input then carries
    integers of that type, as FINN's build annotates it.

    The result's metadata (`METADATA_KEY`, JSON) holds `input` (the float -> integer quantizer and layout that
    run before the graph) and `outputs` (per graph output: the per-channel scale and bias that map its integers
    to QONNX's values, its QONNX name and shape, and its layout).
    """
    conv = Converter(model, input_datatype)
    for node in model.graph.node:
        handler = HANDLERS.get(node.op_type)
        if handler is None or (node.domain and node.domain not in ("", "ai.onnx", *QUANT_DOMAINS)):
            raise InputError(_where(node), f"op type {node.op_type!r} (domain {node.domain or 'ai.onnx'!r}) is not "
                                           "supported by the QONNX importer", sorted(HANDLERS))
        _check_inputs(node)
        handler(conv, node)
    if conv.flow.input is None:
        raise InputError("model input", "no Quant/BipolarQuant quantizes the model input; FINN's dataflow graph "
                                        "takes integers")
    outputs, post = [], []
    for out in model.graph.output:
        value = conv.values.get(out.name)
        if not isinstance(value, Stream):
            raise InputError(f"graph output {out.name}", "is not computed from the quantized input")
        scale, bias = value.affine(f"graph output {out.name}")
        outputs.append((value.tensor, value))
        post.append({"tensor": value.tensor, "qonnx_output": out.name, "scale": scale.tolist(), "bias": bias.tolist(),
                     "layout": "NHWC" if len(value.shape) == 4 else "NC", "datatype": value.datatype,
                     "perm": value.perm.tolist() if value.perm is not None else None,
                     "labels": out.name in conv.labels})
    insert_duplicate_streams(conv.flow, [t for t, _ in outputs])
    return build_model(conv.flow, outputs, model.graph.name or "qonnx", {"input": conv.preprocess, "outputs": post})


# ---------------------------------------------------------------------------------------------------------
# the float steps around the integer graph, for whoever feeds it (emulation, gateway, tests)


def conversion_metadata(model: onnx.ModelProto) -> dict:
    """The `input` and `outputs` records import_qonnx wrote into a FINN dataflow model."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise InputError("model metadata", f"no {METADATA_KEY!r} entry: the model was not made by import_qonnx")


def input_to_integers(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """QONNX's float input (NCHW or NC) -> the dataflow graph's integer input (NHWC or NC), as QONNX quantizes it."""
    meta = conversion_metadata(model)["input"]
    x = np.asarray(x, dtype=np.float64)
    for step in meta["prepare"]:
        if step["op"] == "Relu":
            x = np.maximum(x, 0.0)
        elif step["op"] == "Flatten":
            x = x.reshape(x.shape[0], -1)
        else:
            x = x * np.asarray(step["value"]) if step["op"] == "Mul" else x + np.asarray(step["value"])
    if meta["layout"] == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    quant = Quantizer(np.asarray(meta["scale"]), np.asarray(meta["zero_point"]), meta["bits"], meta["signed"],
                      meta["narrow"], meta["rounding_mode"])
    return quant.ints(x)  # the zero point stays in: the graph's integers are the quantizer's own


def outputs_to_real(model: onnx.ModelProto, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The dataflow graph's integer outputs -> QONNX's output values and layout, by QONNX output name."""
    real = {}
    for meta in conversion_metadata(model)["outputs"]:
        y = np.asarray(outputs[meta["tensor"]], dtype=np.float64)
        if not meta["labels"]:
            y = y * np.asarray(meta["scale"]) + np.asarray(meta["bias"])
        if meta["layout"] == "NHWC":
            y = y.transpose(0, 3, 1, 2)
        elif meta["perm"] is not None:
            y = y[..., np.argsort(meta["perm"])]
        real[meta["qonnx_output"]] = y
    return real
