"""An independent numpy reading of FINN dataflow nodes (FINN's python-execution semantics), for tests.

Layout NHWC; SWG windows in (kernel row, kernel column, channel) order; MVAU weights (MW, MH); VVAU weights
(C, 1, k, k); thresholds (channels, steps) counted with >=, plus ActVal (BIPOLAR outputs: 2·count - 1).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _activate(acc: np.ndarray, thresholds: np.ndarray, attrs: dict) -> np.ndarray:
    count = (acc[..., None] >= thresholds).sum(axis=-1)
    if attrs.get("outputDataType") == "BIPOLAR":
        return 2 * count - 1
    return count + attrs.get("ActVal", 0)


def _windows(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    n, h, w, c = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.empty((n, oh, ow, k, k, c), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, :, i, j, :] = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
    return out.reshape(n, oh, ow, k * k * c)


def _mvau(a: dict, x: np.ndarray, w: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    shape = list(a.get("numInputVectors", [1]))
    acc = x.reshape(-1, a["MW"]) @ w
    acc = acc.reshape(*shape, a["MH"])
    return acc if a["noActivation"] else _activate(acc, t, a)


def _vvau(a: dict, x: np.ndarray, w: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    c, k = a["Channels"], a["Kernel"][0]
    taps = x.reshape(*x.shape[:-1], k * k, c)
    acc = np.einsum("...jc,cj->...c", taps, w.reshape(c, k * k))
    return acc if a["noActivation"] else _activate(acc, t, a)


def _pool(a: dict, x: np.ndarray) -> np.ndarray:
    k2 = a["KernelSize"][0] * a["KernelSize"][1]
    taps = x.reshape(*x.shape[:-1], k2, a["Channels"])
    if a["Function"] == "MaxPool":
        return taps.max(axis=-2)
    ibits = int("".join(ch for ch in a["InputDataType"] if ch.isdigit()))
    obits = int("".join(ch for ch in a["OutputDataType"] if ch.isdigit()))
    shift = max(((2**ibits - 1) * k2).bit_length() - obits, 0)
    return np.right_shift(taps.sum(axis=-2).astype(np.int64), shift)


def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the dataflow graph for integer input x (int64 arithmetic, exact)."""
    env = {model.graph.input[0].name: np.asarray(x).astype(np.int64)}
    env.update({i.name: numpy_helper.to_array(i).astype(np.int64) for i in model.graph.initializer})
    for node in model.graph.node:
        assert node.domain == "finn.custom_op.fpgadataflow.hls", node.domain
        op, a = node.op_type.removesuffix("_hls"), _attrs(node)
        ins = [env[t] for t in node.input]
        if op == "MVAU":
            out = [_mvau(a, ins[0], ins[1], ins[2] if len(ins) > 2 else None)]
        elif op == "VVAU":
            out = [_vvau(a, ins[0], ins[1], ins[2] if len(ins) > 2 else None)]
        elif op == "Thresholding":
            out = [_activate(ins[0], ins[1], a)]
        elif op == "ConvolutionInputGenerator":
            out = [_windows(ins[0], a["ConvKernelDim"][0], a["Stride"][0])]
        elif op == "FMPadding":
            top, left, bottom, right = a["Padding"]
            out = [np.pad(ins[0], ((0, 0), (top, bottom), (left, right), (0, 0)))]
        elif op == "DownSampler":
            out = [ins[0][:, ::a["Stride"], ::a["Stride"], :]]
        elif op == "StreamingMaxPool":
            k = a["PoolDim"][0]
            n, h, w, c = ins[0].shape
            out = [ins[0].reshape(n, h // k, k, w // k, k, c).max(axis=(2, 4))]
        elif op == "Pool":
            out = [_pool(a, ins[0])]
        elif op == "AddStreams":
            out = [ins[0] + ins[1]]
        elif op == "DuplicateStreams":
            out = [ins[0]] * a["NumOutputStreams"]
        elif op == "LabelSelect":
            out = [np.argsort(-ins[0], axis=-1, kind="stable")[..., :a["K"]]]
        else:
            raise AssertionError(f"no reference for {node.op_type}")
        env.update(zip(node.output, out, strict=True))
    return env
