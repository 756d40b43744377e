"""An independent numpy executor of FINN dataflow ONNX models: the reference the emulation lowering is tested
against. Written from FINN's documented semantics (execute_node of each op, qonnx MultiThreshold), in exact
int64/float64 arithmetic, one plain function per op, without the partitioner's code.

Layout conventions (as in the hardware streams): NHWC tensors; a sliding window lists (kh, kw, c); a
depthwise window with SIMD lanes lists (c // SIMD, kh, kw, c % SIMD), which VVAU and Pool read back with
their PE (= that SIMD).
"""

from __future__ import annotations

import re

import numpy as np
from onnx import helper, numpy_helper


def dtype_range(name: str) -> tuple[int, int]:
    if name == "BIPOLAR":
        return -1, 1
    if name == "BINARY":
        return 0, 1
    if name == "TERNARY":
        return -1, 1
    bits = int(re.fullmatch(r"U?INT(\d+)", name).group(1))
    return (0, 2 ** bits - 1) if name.startswith("U") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def first(attrs: dict, *names, default=None):
    return next((attrs[n] for n in names if n in attrs), default)


def scalar(value):
    return value[0] if isinstance(value, list) else value


def multithreshold(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per channel (last axis) the number of thresholds x reaches: a binary search in the sorted thresholds."""
    channels = x.shape[-1]
    table = np.sort(np.broadcast_to(thresholds, (channels, thresholds.shape[1])).astype(np.float64), axis=1)
    flat = x.reshape(-1, channels).astype(np.float64)
    count = np.stack([np.searchsorted(table[c], flat[:, c], side="right") for c in range(channels)], axis=-1)
    return count.reshape(x.shape)


def activate(acc: np.ndarray, attrs: dict, params: list[np.ndarray]) -> np.ndarray:
    if attrs.get("noActivation", 0):
        return acc
    count = multithreshold(acc, params[1])
    if attrs["outputDataType"] == "BIPOLAR":
        return 2 * count - 1
    return count + attrs.get("ActVal", 0)


def matrix(x: np.ndarray, w: np.ndarray, attrs: dict) -> np.ndarray:
    """Exact integer products through BLAS (int64 has none): float32 when no sum can reach 2**24, else float64
    (exact below 2**53)."""
    if attrs.get("binaryXnorMode", 0) or (attrs["inputDataType"] == "BIPOLAR" == attrs["weightDataType"]):
        return (x[..., :, None] == w).sum(axis=-2)  # xnor-popcount: number of equal entries
    bound = w.shape[0] * np.abs(w).max(initial=0) * np.abs(x).max(initial=0)
    exact = np.float32 if bound < 2 ** 24 else np.float64
    return (x.astype(exact) @ w.astype(exact)).astype(np.float64)


def mvau(attrs, ins, params):
    x = ins[0].reshape(*attrs.get("numInputVectors", [1]), attrs["MW"])
    return [activate(matrix(x, params[0].reshape(attrs["MW"], attrs["MH"]), attrs), attrs, params)]


def windows(img: np.ndarray, k: int, stride: int, dilation: int, ofm: int) -> np.ndarray:
    """(1, OFM, OFM, K, K, C): out[0, oy, ox, kh, kw] = img[0, oy·s + kh·d, ox·s + kw·d]."""
    out = np.empty((1, ofm, ofm, k, k, img.shape[-1]), img.dtype)
    end = (ofm - 1) * stride + 1
    for kh in range(k):
        for kw in range(k):
            top, left = kh * dilation, kw * dilation
            out[0, :, :, kh, kw] = img[0, top:top + end:stride, left:left + end:stride]
    return out


def conv_double_packed(attrs, ins, params):
    k, ifm, c, pad = attrs["ConvKernelDim"], attrs["IFMDim"], attrs["IFMChannels"], attrs["Padding"]
    img = np.pad(ins[0].reshape(1, ifm, ifm, c), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    win = windows(img, k, attrs["Stride"], 1, attrs["OFMDim"]).reshape(1, attrs["OFMDim"], attrs["OFMDim"], -1)
    return [activate(matrix(win, params[0].reshape(attrs["MW"], attrs["MH"]), attrs), attrs, params)]


def swg(attrs, ins, params):
    k, ifm, c = scalar(attrs["ConvKernelDim"]), scalar(attrs["IFMDim"]), attrs["IFMChannels"]
    ofm = scalar(attrs["OFMDim"])
    win = windows(ins[0].reshape(1, ifm, ifm, c), k, scalar(attrs.get("Stride", 1)), scalar(attrs.get("Dilation", 1)),
                  ofm)
    lanes = attrs["SIMD"]
    if attrs.get("depthwise", 0):  # (c // SIMD, kh, kw, c % SIMD)
        win = win.reshape(1, ofm, ofm, k, k, c // lanes, lanes).transpose(0, 1, 2, 5, 3, 4, 6)
    return [win.reshape(1, ofm, ofm, -1)]


def window_values(x: np.ndarray, dim: int, kk: int, channels: int, pe: int) -> np.ndarray:
    """(1, D, D, K·K, C) from a depthwise window tensor with PE lanes."""
    return x.reshape(1, dim, dim, channels // pe, kk, pe).transpose(0, 1, 2, 4, 3, 5).reshape(1, dim, dim, kk, channels)


def vvau(attrs, ins, params):
    k, c, dim = scalar(attrs["Kernel"]), attrs["Channels"], scalar(attrs["Dim"])
    win = window_values(ins[0], dim, k * k, c, attrs["PE"]).astype(np.int64)
    w = params[0].reshape(c, k * k).T.astype(np.int64)
    if attrs["inputDataType"] == "BIPOLAR" == attrs["weightDataType"]:
        acc = (win == w).sum(axis=3)
    else:
        acc = (win * w).sum(axis=3)
    return [activate(acc, attrs, params)]


def thresholding(attrs, ins, params):
    count = multithreshold(ins[0], params[0]) + attrs.get("ActVal", 0)
    return [2 * count - 1 if attrs["outputDataType"] == "BIPOLAR" else count]


def channelwise(attrs, ins, params):
    p = params[0].reshape(-1).astype(np.int64)
    x = ins[0].astype(np.int64)
    return [x + p if attrs["Func"] == "add" else x * p]


def pool(attrs, ins, params):
    k, c = scalar(attrs["KernelSize"]), attrs["Channels"]
    dim = scalar(first(attrs, "OutImgDims", "OutImgDim"))
    win = window_values(ins[0], dim, k * k, c, attrs["PE"]).astype(np.int64)
    if attrs["Function"] == "MaxPool":
        return [win.max(axis=3)]
    ibits = int(re.search(r"\d+", first(attrs, "InputDataType", "inputDataType", "dataType")).group())
    obits = int(re.search(r"\d+", first(attrs, "OutputDataType", "outputDataType")).group())
    shift = max(0, int((2 ** ibits - 1) * k * k).bit_length() - obits)
    return [np.right_shift(win.sum(axis=3), shift)]


def maxpool(attrs, ins, params):
    ifm, p, c = scalar(attrs["ImgDim"]), scalar(attrs["PoolDim"]), attrs["NumChannels"]
    o = ifm // p
    x = ins[0].reshape(1, ifm, ifm, c)[:, :o * p, :o * p]
    return [x.reshape(1, o, p, o, p, c).max(axis=(2, 4))]


def fmpadding(attrs, ins, params):
    top, left, bottom, right = attrs["Padding"]
    ifm = scalar(attrs["ImgDim"])
    x = ins[0].reshape(1, ifm, ifm, attrs["NumChannels"])
    return [np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))]


def fmpadding_pixel(attrs, ins, params):
    """FINN's execute_node: pixel (h, w) goes to (h·s, w·s), zeros elsewhere."""
    (h, w), (sh, sw) = attrs["ImgDim"], attrs["Stride"]
    x = ins[0].reshape(1, h, w, attrs["NumChannels"])
    out = np.zeros((1, h + (h - 1) * (sh - 1), w + (w - 1) * (sw - 1), x.shape[-1]), dtype=x.dtype)
    for y in range(h):
        for z in range(w):
            out[:, y * sh, z * sw] = x[:, y, z]
    return [out]


def upsample(attrs, ins, params):
    """finn-hlslib UpsampleNearestNeighbour (OFMDim a multiple of IFMDim): output pixel (y, x) repeats
    input pixel (y // s, x // s); DimMode 1 upsamples along H only."""
    ifm, ofm, c = attrs["IFMDim"], attrs["OFMDim"], attrs["NumChannels"]
    s = ofm // ifm
    if attrs.get("DimMode", 0) == 1:
        x = ins[0].reshape(1, ifm, 1, c)
        return [np.stack([x[:, y // s] for y in range(ofm)], axis=1)]
    x = ins[0].reshape(1, ifm, ifm, c)
    return [np.array([[[x[0, y // s, z // s] for z in range(ofm)] for y in range(ofm)]])]


def downsampler(attrs, ins, params):
    s, ifm = attrs["Stride"], attrs["ImgDim"]
    return [ins[0].reshape(1, ifm, ifm, attrs["NumChannels"])[:, ::s, ::s]]


def labelselect(attrs, ins, params):
    scores = ins[0].reshape(-1, attrs["Labels"])
    order = np.argsort(-scores.astype(np.float64), axis=-1, kind="stable")  # ties: lower index first
    return [order[:, :attrs["K"]]]


REFERENCE = {
    "MVAU": mvau, "ConvDoublePacked": conv_double_packed, "VVAU": vvau, "ConvolutionInputGenerator": swg,
    "Thresholding": thresholding, "ChannelwiseOp": channelwise, "Pool": pool, "StreamingMaxPool": maxpool,
    "FMPadding": fmpadding, "FMPadding_Pixel": fmpadding_pixel, "UpsampleNearestNeighbour": upsample,
    "DownSampler": downsampler, "AddStreams": lambda a, ins, p: [ins[0] + ins[1]],
    "DuplicateStreams": lambda a, ins, p: [ins[0]] * a["NumOutputStreams"], "LabelSelect": labelselect,
    "StreamingFIFO": lambda a, ins, p: [ins[0]], "StreamingDataWidthConverter": lambda a, ins, p: [ins[0]],
}


def family(op_type: str) -> str:
    return re.sub(r"(_Batch|_hls|_rtl)$", "", op_type)


def node_attrs(node) -> dict:
    attrs = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        attrs[a.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


def run(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of a (topologically sorted) FINN dataflow model for input x."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    env = {model.graph.input[0].name: x}
    for node in model.graph.node:
        ins = [env[t] for t in node.input if t not in inits]
        params = [inits[t] for t in node.input if t in inits]
        outs = REFERENCE[family(node.op_type)](node_attrs(node), ins, params)
        env.update(zip(node.output, outs))
    return env
