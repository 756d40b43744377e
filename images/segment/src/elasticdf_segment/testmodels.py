"""Small random-weight quantized test models (plain CNN, CNN with residual blocks) as ONNX.

Quantization is emulated with standard ops so results are bit-exact however the model is cut: inputs and
weights are small integers held in float32, every conv/matmul sum stays far below 2^24 (exact in float32 in any
summation order), and each layer requantizes by a power-of-two Mul, Round and Clip to 4-bit unsigned
activations. Node names are "<layer>/<op>" so `split.layer_names` groups them into layers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ACT_MAX = 15.0  # UINT4 activations
OPSET = 17


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, layer: str, op: str, inputs: list[str], **attrs) -> str:
        out = f"{layer}_{op.lower()}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{layer}/{op}", **attrs))
        return out

    def requant(self, layer: str, x: str, shift: int) -> str:
        scaled = self.node(layer, "Mul", [x, self.const(f"{layer}_scale", np.float32(2.0 ** -shift))])
        rounded = self.node(layer, "Round", [scaled])
        return self.node(layer, "Clip", [rounded, self.const(f"{layer}_lo", np.float32(0)),
                                         self.const(f"{layer}_hi", np.float32(ACT_MAX))])

    def conv(self, layer: str, x: str, cin: int, cout: int, shift: int = 4) -> str:
        w = self.rng.integers(-3, 4, size=(cout, cin, 3, 3)).astype(np.float32)  # 3-bit signed weights
        y = self.node(layer, "Conv", [x, self.const(f"{layer}_w", w)], pads=[1, 1, 1, 1])
        return self.requant(layer, y, shift)

    def model(self, name: str, x_shape: list[int], y: str, y_shape: list[int]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info(y, TensorProto.FLOAT, y_shape)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # readable by every onnxruntime we support
        onnx.checker.check_model(model)
        return model


def _head(b: _Builder, x: str, channels: int, size: int, classes: int) -> str:
    pooled = b.node("pool", "MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    flat = b.node("fc", "Flatten", [pooled])
    features = channels * (size // 2) ** 2
    w = b.rng.integers(-3, 4, size=(features, classes)).astype(np.float32)
    return b.node("fc", "MatMul", [flat, b.const("fc_w", w)])


def plain_cnn(seed: int = 0, channels: int = 8, size: int = 16, depth: int = 4, classes: int = 10,
              batch: int = 1) -> onnx.ModelProto:
    """input -> depth x (conv3x3, requant) -> maxpool -> fc. Layers: conv0..conv{depth-1}, pool, fc."""
    b = _Builder(seed)
    x, cin = "x", 3
    for i in range(depth):
        x = b.conv(f"conv{i}", x, cin, channels)
        cin = channels
    y = _head(b, x, channels, size, classes)
    return b.model("plain_cnn", [batch, 3, size, size], y, [batch, classes])


def residual_cnn(seed: int = 0, channels: int = 8, size: int = 16, blocks: int = 2, classes: int = 10,
                 batch: int = 1) -> onnx.ModelProto:
    """stem, then blocks of (conv a, conv b, add skip + requant), then pool, fc.
    Cuts between blocks are legal; a cut inside a block crosses two live tensors and is rejected."""
    b = _Builder(seed)
    x = b.conv("stem", "x", 3, channels)
    for i in range(blocks):
        a = b.conv(f"res{i}a", x, channels, channels)
        c = b.conv(f"res{i}b", a, channels, channels)
        added = b.node(f"res{i}add", "Add", [x, c])
        x = b.requant(f"res{i}add", added, 1)
    y = _head(b, x, channels, size, classes)
    return b.model("residual_cnn", [batch, 3, size, size], y, [batch, classes])


def random_frames(n: int, size: int = 16, seed: int = 1, batch: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 16, size=(batch, 3, size, size)).astype(np.float32) for _ in range(n)]
