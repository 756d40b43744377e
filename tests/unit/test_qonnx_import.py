"""QONNX -> FINN dataflow ONNX: FINN's node types, the same integers as QONNX's own executor, clear errors.

The QONNX side runs on qonnx's executor (`execute_onnx`); the FINN side as the product runs it: lowered to
standard ONNX (`emulation.lower_model`, itself checked op by op against an independent numpy reading of FINN's
semantics in test_emulation_ops.py) on onnxruntime. Outputs are compared after the documented float post-processing
(per-channel scale and bias) as QONNX values, and exactly as integers.
"""

from __future__ import annotations

import re
from pathlib import Path

import finn_reference
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qonnx
from elasticdf_partitioner.artifacts import ModelError
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.emulation import lower_model
from elasticdf_partitioner.errors import InputError
from elasticdf_partitioner.finn_io import export_finn, import_onnx
from elasticdf_partitioner.modelio import load_model
from elasticdf_partitioner.qonnx_import import (
    conversion_metadata,
    import_qonnx,
    input_to_integers,
    is_qonnx,
    outputs_to_real,
)
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.solver.pack import PackSettings
from elasticdf_segment import split
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.infer_shapes import InferShapes

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "examples" / "clusters" / "1xU250.yaml"
QONNX_DATA = Path(qonnx.__file__).parent / "data" / "onnx"
COMMITTED = ROOT / "tests" / "data" / "qonnx"
QDOMAIN = "qonnx.custom_op.general"


class Builder:
    """A QONNX graph written the way Brevitas exports it: Quant nodes on weights and activations."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value, dtype=np.float32) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], domain: str = "", n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type + "_"), domain=domain,
                                           **attrs))
        return outs[0] if n_out == 1 else outs

    def quant(self, x: str, scale, bits: int, signed: bool, narrow: bool = False, zero_point=0.0) -> str:
        return self.op("Quant", [x, self.const(scale), self.const(zero_point), self.const(float(bits))], QDOMAIN,
                       signed=int(signed), narrow=int(narrow), rounding_mode="ROUND")

    def bipolar(self, x: str, scale) -> str:
        return self.op("BipolarQuant", [x, self.const(scale)], QDOMAIN)

    def weight(self, shape, bits: int, per_channel: bool = True) -> str:
        w = self.rng.normal(0, 1, shape)
        scale_shape = (shape[0],) + (1,) * (len(shape) - 1) if per_channel else ()
        scale = np.abs(self.rng.normal(0.1, 0.03, scale_shape)) + 0.02
        return self.quant(self.const(w), scale, bits, signed=True, narrow=True)

    def bn(self, x: str, c: int, negative: bool = False) -> str:
        gamma = self.rng.uniform(0.5, 1.5, c) * (np.where(np.arange(c) % 3 == 0, -1, 1) if negative else 1)
        beta, mean = self.rng.normal(0, 0.5, c), self.rng.normal(0, 0.5, c)
        var = self.rng.uniform(0.5, 2.0, c)
        return self.op("BatchNormalization", [x, *(self.const(v) for v in (gamma, beta, mean, var))], epsilon=1e-5)

    def conv(self, x: str, w: str, bias: np.ndarray | None = None, **attrs) -> str:
        inputs = [x, w] + ([self.const(bias)] if bias is not None else [])
        return self.op("Conv", inputs, **attrs)

    def model(self, x_shape, out: str | list[str], out_type=TensorProto.FLOAT) -> onnx.ModelProto:
        outs = [out] if isinstance(out, str) else out
        graph = helper.make_graph(self.nodes, "qonnx_test",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                                  [helper.make_tensor_value_info(o, out_type, None) for o in outs],
                                  initializer=self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QDOMAIN, 1)])


def convnet() -> onnx.ModelProto:
    """Padded conv + BN + ReLU, a 1x1-conv residual branch (DuplicateStreams + AddStreams + Thresholding),
    max pool, a depthwise conv with negative scales and a signed narrow quantizer, flatten and Gemm."""
    b = Builder(1)
    s = 0.37
    x = b.quant("x", 1 / 255, 8, signed=False)
    y = b.conv(x, b.weight((8, 3, 3, 3), 4), b.rng.normal(0, 0.2, 8), pads=[1, 1, 1, 1])
    y1 = b.quant(b.op("Relu", [b.bn(y, 8)]), s, 4, signed=False)
    y2 = b.conv(y1, b.weight((8, 8, 1, 1), 3))
    y2 = b.quant(b.op("Relu", [b.bn(y2, 8)]), s, 4, signed=False)
    r = b.quant(b.op("Add", [y1, y2]), 0.5, 4, signed=False)
    r = b.op("MaxPool", [r], kernel_shape=[2, 2], strides=[2, 2])
    d = b.conv(r, b.weight((8, 1, 3, 3), 4), group=8, pads=[1, 1, 1, 1], strides=[2, 2])
    d = b.op("Mul", [d, b.const(b.rng.normal(0, 1, (1, 8, 1, 1)))])
    d = b.quant(d, 0.21, 4, signed=True, narrow=True)
    f = b.op("Flatten", [d], axis=1)
    out = b.op("Gemm", [f, b.weight((10, 8 * 4 * 4), 4), b.const(b.rng.normal(0, 1, 10))], transB=1)
    return b.model((1, 3, 16, 16), out)


def pooled_classifier() -> onnx.ModelProto:
    """Signed input, unpadded strided SWG + MVAU, an overlapping max pool (SWG + Pool), a strided 1x1 conv
    (DownSampler), global average pool into a Thresholding, MatMul on transposed weights and TopK (LabelSelect)."""
    b = Builder(2)
    x = b.quant("x", 0.05, 6, signed=True)
    y = b.conv(x, b.weight((12, 2, 3, 3), 3), strides=[2, 2])
    y = b.quant(b.op("Relu", [y]), 0.4, 3, signed=False)
    y = b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[1, 1])
    y = b.conv(y, b.weight((16, 12, 1, 1), 4), strides=[2, 2])
    y = b.quant(b.op("Relu", [b.bn(y, 16)]), 0.3, 4, signed=False)
    y = b.op("GlobalAveragePool", [y])
    y = b.quant(y, 0.2, 4, signed=False)
    y = b.op("Reshape", [y, b.const([1, -1], np.int64)])
    y = b.op("MatMul", [y, b.op("Transpose", [b.weight((10, 16), 2, per_channel=False)], perm=[1, 0])])
    y = b.op("Mul", [y, b.const(0.125)])
    _, idx = b.op("TopK", [y, b.const([3], np.int64)], n_out=2, axis=-1)
    return b.model((1, 2, 18, 18), idx, TensorProto.INT64)


def bnn_mlp() -> onnx.ModelProto:
    """LFC-style: bipolar input, bipolar weights, BatchNorm + BipolarQuant activations, a final scaled MatMul."""
    b = Builder(3)
    x = b.bipolar("x", 1.0)
    for k_in, k_out in ((64, 32), (32, 32)):
        w = b.bipolar(b.const(b.rng.normal(0, 1, (k_in, k_out))), 1.0)
        x = b.bipolar(b.bn(b.op("MatMul", [x, w]), k_out, negative=True), 1.0)
    w = b.bipolar(b.const(b.rng.normal(0, 1, (32, 10))), 1.0)
    out = b.op("Mul", [b.op("MatMul", [x, w]), b.const(0.5)])
    return b.model((1, 64), out)


def mobilenet_like() -> onnx.ModelProto:
    """Brevitas' MobileNet pattern: the first conv reads UINT8 pixels (declared, no input quantizer), depthwise +
    pointwise blocks, average pool + Trunc (TruncAvgPool), a Gemm with a quantized bias."""
    b = Builder(6)
    y = b.conv("x", b.weight((8, 3, 3, 3), 8), strides=[2, 2])
    y = b.quant(b.op("Relu", [b.bn(y, 8)]), 0.25, 4, signed=False)
    y = b.conv(y, b.weight((8, 1, 3, 3), 4), group=8, pads=[1, 1, 1, 1])
    y = b.quant(b.op("Relu", [b.bn(y, 8, negative=True)]), 0.2, 4, signed=False)
    y = b.conv(y, b.weight((16, 8, 1, 1), 4))
    a = 0.15
    y = b.quant(b.op("Relu", [b.bn(y, 16)]), a, 4, signed=False)
    y = b.op("AveragePool", [y], kernel_shape=[7, 7], strides=[1, 1])
    y = b.op("Trunc", [y, b.const(a / 49), b.const(0.0), b.const(10.0), b.const(a * 8), b.const(4.0)], QDOMAIN,
             signed=0, narrow=0, rounding_mode="FLOOR")
    y = b.op("Reshape", [y, b.const([1, -1], np.int64)])
    bias = b.quant(b.const(b.rng.normal(0, 1, 10)), 0.01, 16, signed=True)
    out = b.op("Gemm", [y, b.weight((10, 16), 4), bias], transB=1)
    model = b.model((1, 3, 15, 15), out)
    model.opset_import[1].version = 2  # Trunc v2
    return model


def subpixel_upscaler(mode: str) -> onnx.ModelProto:
    """ESPCN's sub-pixel tail: a same-padded conv with b²·C outputs (one bias per channel C) and DepthToSpace,
    ReLU, 8-bit output quantizer."""
    b = Builder(8)
    x = b.quant("x", 1 / 255, 8, signed=False)
    y = b.conv(x, b.weight((6, 3, 3, 3), 4), b.rng.normal(0, 0.2, 6), pads=[1, 1, 1, 1])
    y = b.quant(b.op("Relu", [b.bn(y, 6)]), 0.3, 4, signed=False)
    bias = b.rng.normal(0, 0.3, 2)  # channel c's bias on each of its 4 sub-pixel channels
    y = b.conv(y, b.weight((8, 6, 3, 3), 8, per_channel=False), np.repeat(bias, 4) if mode == "CRD" else
               np.tile(bias, 4), pads=[1, 1, 1, 1])
    y = b.op("DepthToSpace", [y], blocksize=2, mode=mode)
    return b.model((1, 3, 6, 6), b.quant(b.op("Relu", [y]), 1 / 255, 8, signed=False))


def resize_upscaler(**resize) -> onnx.ModelProto:
    """ESPCN's nearest-neighbour variant: a quantized activation upsampled x3 by Resize, then a padded conv."""
    b = Builder(9)
    x = b.quant("x", 1 / 255, 8, signed=False)
    y = b.quant(b.op("Relu", [b.conv(x, b.weight((4, 3, 3, 3), 4), pads=[1, 1, 1, 1])]), 0.2, 4, signed=False)
    attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor") | resize
    y = b.op("Resize", [y, b.const(np.zeros(0)), b.const([1, 1, 3, 3])], **attrs)
    y = b.conv(y, b.weight((3, 4, 3, 3), 4), pads=[1, 1, 1, 1])
    return b.model((1, 3, 5, 5), b.quant(b.op("Relu", [y]), 1 / 255, 8, signed=False))


# name -> (builder, input shape, input range, declared input datatype)
SYNTHETIC = {"convnet": (convnet, (1, 3, 16, 16), (0, 1), None),
             "pooled_classifier": (pooled_classifier, (1, 2, 18, 18), (-2, 2), None),
             "bnn_mlp": (bnn_mlp, (1, 64), (-1, 1), None),
             "mobilenet_like": (mobilenet_like, (1, 3, 15, 15), (0, 255), "UINT8"),
             "subpixel_crd": (lambda: subpixel_upscaler("CRD"), (1, 3, 6, 6), (0, 1), None),
             "subpixel_dcr": (lambda: subpixel_upscaler("DCR"), (1, 3, 6, 6), (0, 1), None),
             "resize_nearest": (resize_upscaler, (1, 3, 5, 5), (0, 1), None),
             "resize_half_pixel": (lambda: resize_upscaler(coordinate_transformation_mode="half_pixel",
                                                           nearest_mode="round_prefer_floor"), (1, 3, 5, 5), (0, 1),
                                   None)}


def qonnx_outputs(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    wrapped = ModelWrapper(model).transform(InferShapes())
    result = execute_onnx(wrapped, {wrapped.graph.input[0].name: x.astype(np.float32)})
    return {o.name: result[o.name] for o in model.graph.output}


def finn_outputs(dataflow: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(lower_model(dataflow).SerializeToString(), providers=["CPUExecutionProvider"])
    feed = input_to_integers(dataflow, x).astype(np.float32)
    names = [o.name for o in dataflow.graph.output]
    return outputs_to_real(dataflow, dict(zip(names, session.run(names, {session.get_inputs()[0].name: feed}))))


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def committed_models() -> list[Path]:
    """Brevitas exports made by tests/data/qonnx/export_brevitas.py (the ones small enough to commit)."""
    return sorted(COMMITTED.glob("*.onnx"))


def plan_on_a_u250(graph):
    # Tiny networks replicate hundreds of times on a U250; one instance keeps the test about planning
    # the imported graph, not about the solver's replica search.
    return solve(graph, load_cluster(CLUSTER), settings=PackSettings(max_instances=1))


# ---------------------------------------------------------------------------------------------------------
# the same results as QONNX


def check_same_as_qonnx(model: onnx.ModelProto, shape, lo: float, hi: float, input_datatype: str | None = None,
                        frames: int = 4) -> None:
    dataflow = import_qonnx(model, input_datatype)
    rng = np.random.default_rng(7)
    for _ in range(frames):
        x = rng.integers(lo, hi + 1, shape) if input_datatype else rng.uniform(lo, hi, shape)
        want, got = qonnx_outputs(model, x), finn_outputs(dataflow, x)
        for out, value in want.items():
            meta = next(m for m in conversion_metadata(dataflow)["outputs"] if m["qonnx_output"] == out)
            if meta["labels"]:
                np.testing.assert_array_equal(got[out], value)
            else:  # integers times the output scale: equal up to float32 rounding of QONNX's arithmetic
                np.testing.assert_allclose(got[out], value, rtol=1e-4, atol=1e-4 * np.max(np.abs(value)))


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_models_give_qonnx_results(name):
    make, shape, (lo, hi), input_datatype = SYNTHETIC[name]
    check_same_as_qonnx(make(), shape, lo, hi, input_datatype)


@pytest.mark.parametrize("path", committed_models(), ids=lambda p: p.stem)
def test_brevitas_exports_give_qonnx_results(path):
    model = onnx.load(path)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    check_same_as_qonnx(model, shape, 0.0, 1.0)


def test_convnet_maps_to_finn_layers():
    dataflow = import_qonnx(convnet())
    assert is_qonnx(convnet()) and not is_qonnx(dataflow)
    assert {n.domain for n in dataflow.graph.node} == {"finn.custom_op.fpgadataflow.hls"}
    assert op_types(dataflow) == [
        "FMPadding_hls", "ConvolutionInputGenerator_hls", "MVAU_hls", "DuplicateStreams_hls", "MVAU_hls",
        "AddStreams_hls", "Thresholding_hls", "StreamingMaxPool_hls", "FMPadding_hls",
        "ConvolutionInputGenerator_hls", "VVAU_hls", "MVAU_hls"]
    attrs = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in dataflow.graph.node}
    assert attrs["MVAU_hls_0"]["noActivation"] == 0 and attrs["MVAU_hls_0"]["outputDataType"] == b"UINT4"
    assert attrs["VVAU_hls_0"]["outputDataType"] == b"INT4" and attrs["VVAU_hls_0"]["ActVal"] == -7
    assert attrs["MVAU_hls_2"]["noActivation"] == 1 and attrs["MVAU_hls_2"]["MW"] == 128
    assert attrs["ConvolutionInputGenerator_hls_1"]["depthwise"] == 1


def test_pooled_classifier_maps_to_finn_layers():
    assert op_types(import_qonnx(pooled_classifier())) == [
        "ConvolutionInputGenerator_hls", "MVAU_hls", "ConvolutionInputGenerator_hls", "Pool_hls", "DownSampler_hls",
        "MVAU_hls", "ConvolutionInputGenerator_hls", "Pool_hls", "Thresholding_hls", "MVAU_hls", "LabelSelect_hls"]


# ---------------------------------------------------------------------------------------------------------
# real inputs


def test_committed_brevitas_exports_are_there():
    assert [p.stem for p in committed_models()] == ["tfc_w1a1", "tfc_w2a2"]


@pytest.mark.parametrize("path", committed_models(), ids=lambda p: p.stem)
def test_brevitas_exports_import_and_plan(path):
    dataflow = import_qonnx(onnx.load(path))
    assert op_types(dataflow) == ["MVAU_hls"] * 4  # TFC: four fully connected layers, activations absorbed
    graph = import_onnx(dataflow, name=path.stem)
    assert plan_on_a_u250(graph).total_fps > 0


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_models_plan_on_a_u250(name):
    make, _, _, input_datatype = SYNTHETIC[name]
    graph = import_onnx(import_qonnx(make(), input_datatype), name=name)
    assert len(graph.layers) >= 3
    assert plan_on_a_u250(graph).total_fps > 0


# ---------------------------------------------------------------------------------------------------------
# the quantized models the qonnx package ships


# name -> (path under qonnx/data/onnx, finn_datatype to annotate the input with (FINN's build does this for an
# input a conv reads unquantized; None: the file quantizes or annotates it), input value range)
SHIPPED = {
    "espcn_nn_resize": ("bsd300x3-espcn/nn_resize/quant_model.onnx", None, (0, 1)),
    "espcn_subpixel": ("bsd300x3-espcn/subpixel/quant_model.onnx", "UINT8", (0, 255)),
    "eltwise_chanlast": ("eltwise_chanlast_testcase.onnx", None, (0, 255)),  # the file annotates UINT8
}
CLUSTER_2XU280 = ROOT / "examples" / "clusters" / "2xU280.yaml"


def shipped(name: str) -> onnx.ModelProto:
    path, declared, _ = SHIPPED[name]
    model = onnx.load(QONNX_DATA / path)
    if declared:
        wrapped = ModelWrapper(model)
        wrapped.set_tensor_datatype(model.graph.input[0].name, DataType[declared])
        model = wrapped.model
    return model


def shipped_frame(name: str, seed: int = 5) -> np.ndarray:
    model, (lo, hi) = shipped(name), SHIPPED[name][2]
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return rng.integers(lo, hi + 1, shape).astype(np.float32) if hi > 1 else rng.uniform(lo, hi, shape)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_qonnx_shipped_models_give_qonnx_results(name):
    """QONNX computes in float32, our thresholds are exact for integers times float64 scales. Where a value lies
    within float32 error of a rounding boundary the two round apart, and the flip spreads through later layers:
    ESPCN nn_resize, frame seed 5: two of 1M first-layer activations (5.4999999886 and 0.4999997973 exactly,
    6 and 1 in QONNX's float32) make 187 of 196,608 outputs differ. Everything else must be equal."""
    model, x = shipped(name), shipped_frame(name)
    dataflow = import_qonnx(model)
    want, got = qonnx_outputs(model, x), finn_outputs(dataflow, x)
    for meta in conversion_metadata(dataflow)["outputs"]:
        diff = np.abs(got[meta["qonnx_output"]] - want[meta["qonnx_output"]])
        assert np.mean(diff > float(np.max(meta["scale"])) / 2) <= 1e-3


@pytest.mark.parametrize("name", sorted(SHIPPED))
@pytest.mark.parametrize("cluster", [CLUSTER, CLUSTER_2XU280], ids=["1xU250", "2xU280"])
def test_qonnx_shipped_models_plan(name, cluster):
    graph = import_onnx(import_qonnx(shipped(name)), name=name)
    plan = solve(graph, load_cluster(cluster), settings=PackSettings(max_instances=1))
    assert plan.total_fps > 0 and len(plan.instances) == 1


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_qonnx_shipped_models_cut_anywhere_answer_like_the_unsplit_model(name):
    """Cut after the first layer, around the upsampling layer and before the last (one pipeline run covers all
    cuts): every output bit equals the unsplit lowered model's."""
    dataflow = import_qonnx(shipped(name))
    lowered = lower_model(dataflow)
    layers = split.layer_names(lowered)
    upsampling = [i for i, layer in enumerate(layers) if layer.startswith(("UpsampleNearest", "FMPadding_Pixel"))]
    cuts = sorted({1, len(layers) - 1, *upsampling, *(i + 1 for i in upsampling)} - {0, len(layers)})
    bounds = [0, *cuts, len(layers)]
    parts = split.split(lowered, [[a, b - 1] for a, b in zip(bounds, bounds[1:])])
    frame = input_to_integers(dataflow, shipped_frame(name)).astype(np.float32)
    tensor = frame
    for part in parts:
        session = ort.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"])
        tensor = session.run(None, {session.get_inputs()[0].name: tensor})[0]
    whole = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    assert len(parts) >= 2
    np.testing.assert_array_equal(tensor, whole.run(None, {whole.get_inputs()[0].name: frame})[0])


UNQUANTIZED = {"residual_block_clean.onnx": "'Conv_0' (op Conv", "mnist-conv/model.onnx": "(op Reshape",
               "matmul_update/sdp.onnx": "'/Constant' (op Constant",
               "bsd300x3-espcn/subpixel/float_model.onnx": "'Conv_0' (op Conv"}


@pytest.mark.parametrize("path", sorted(UNQUANTIZED))
def test_qonnx_shipped_float_models_are_refused_as_unquantized(path):
    with pytest.raises(ModelError, match=re.escape(UNQUANTIZED[path]) + r".*unquantized float network"):
        load_model(QONNX_DATA / path)


def test_qonnx_shipped_minifloat_model_names_its_float_quantizer():
    with pytest.raises(ModelError, match=r"FloatQuant' \(op FloatQuant, domain onnx.brevitas\) is neither"):
        load_model(QONNX_DATA / "floatquant_exec" / "qonnx_act_weight_fp8.onnx")


# ---------------------------------------------------------------------------------------------------------
# clear errors


def test_subpixel_convolution_maps_to_pixel_padding_and_a_window_of_k_times_b():
    """FINN's transposed convolution: FMPadding_Pixel (stride b), FMPadding (k·b - 1 - pad·b), SWG of k·b."""
    dataflow = import_qonnx(subpixel_upscaler("CRD"))
    assert op_types(dataflow)[3:] == ["FMPadding_Pixel_hls", "FMPadding_hls", "ConvolutionInputGenerator_hls",
                                      "MVAU_hls"]
    attrs = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in dataflow.graph.node}
    assert attrs["FMPadding_Pixel_hls_0"]["Stride"] == [2, 2] and attrs["FMPadding_hls_1"]["Padding"] == [3] * 4
    assert attrs["ConvolutionInputGenerator_hls_1"]["ConvKernelDim"] == [6, 6]
    assert attrs["ConvolutionInputGenerator_hls_1"]["OFMDim"] == [12, 12]
    assert (attrs["MVAU_hls_1"]["MW"], attrs["MVAU_hls_1"]["MH"]) == (6 * 6 * 6, 2)


def test_resize_maps_to_upsample_nearest_neighbour():
    dataflow = import_qonnx(resize_upscaler())
    up = next(n for n in dataflow.graph.node if n.op_type == "UpsampleNearestNeighbour_hls")
    attrs = {a.name: helper.get_attribute_value(a) for a in up.attribute}
    assert (attrs["IFMDim"], attrs["OFMDim"], attrs["NumChannels"], attrs["DimMode"]) == (5, 15, 4, 0)
    assert attrs["inputDataType"] == b"UINT4"


@pytest.mark.parametrize("make", [resize_upscaler, lambda: subpixel_upscaler("DCR")], ids=["resize", "subpixel"])
def test_upsampling_layers_export_to_finn_and_import_again(make):
    """to_finn/from_finn of UpsampleNearestNeighbour and FMPadding_Pixel keep every field and the costs; the
    exported model (seeded weights) runs like the reference of FINN's semantics."""
    graph = import_onnx(import_qonnx(make()), name="up")
    exported = export_finn(graph, seed=3)
    again = import_onnx(exported, name="up")
    for old, new in zip(graph.layers, again.layers, strict=True):
        assert (new.op, new.describe(), new.options()) == (old.op, old.describe(), old.options())
    x = np.random.default_rng(1).integers(0, 256, (1, *finn_shape(exported))).astype(np.float32)
    session = ort.InferenceSession(lower_model(exported).SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(got, finn_reference.run(exported, x)[exported.graph.output[0].name]
                                  .reshape(got.shape))


def finn_shape(model: onnx.ModelProto) -> list[int]:
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]


@pytest.mark.parametrize("resize, message", [
    (dict(mode="linear"), r"Resize.*mode.*'linear'.*allowed: \['nearest'\]"),
    (dict(coordinate_transformation_mode="half_pixel", nearest_mode="floor"), r"do not copy pixel"),
])
def test_resize_that_is_not_a_pixel_repeat_is_named(resize, message):
    with pytest.raises(InputError, match=message):
        import_qonnx(resize_upscaler(**resize))


def test_depth_to_space_without_its_conv_is_named():
    b = Builder(10)
    y = b.op("DepthToSpace", [b.quant("x", 0.1, 4, signed=False)], blocksize=2, mode="CRD")
    with pytest.raises(InputError, match=r"DepthToSpace.*only right after a Conv"):
        import_qonnx(b.model((1, 4, 3, 3), y))


def test_mobilenet_like_maps_to_finn_layers():
    assert op_types(import_qonnx(mobilenet_like(), "UINT8")) == [
        "ConvolutionInputGenerator_hls", "MVAU_hls", "FMPadding_hls", "ConvolutionInputGenerator_hls", "VVAU_hls",
        "MVAU_hls", "ConvolutionInputGenerator_hls", "Pool_hls", "Thresholding_hls", "MVAU_hls"]


def test_float_input_read_by_a_conv_asks_for_a_quantizer_or_input_datatype():
    with pytest.raises(InputError, match=r"node Conv_\d+ \(Conv\).*float model input.*input_datatype"):
        import_qonnx(mobilenet_like())
    with pytest.raises(InputError, match=r"input_datatype.*unknown datatype 'UINT'"):
        import_qonnx(mobilenet_like(), "UINT")


def test_unquantized_float_model_is_refused():
    with pytest.raises(InputError, match="float model input"):
        import_qonnx(onnx.load(QONNX_DATA / "residual_block_clean.onnx"))


def test_unquantized_activation_into_a_conv_is_named():
    b = Builder(4)
    x = b.quant("x", 0.1, 4, signed=False)
    y = b.op("Relu", [b.conv(x, b.weight((4, 2, 3, 3), 4))])
    out = b.conv(y, b.weight((4, 4, 3, 3), 4))
    with pytest.raises(InputError, match=r"\(Conv\).*ReLU output that no quantizer"):
        import_qonnx(b.model((1, 2, 8, 8), out))


def test_residual_add_of_two_scales_is_refused():
    b = Builder(5)
    x = b.quant("x", 0.1, 4, signed=False)
    y1 = b.quant(b.op("Relu", [b.conv(x, b.weight((4, 2, 1, 1), 4))]), 0.2, 4, signed=False)
    y2 = b.quant(b.op("Relu", [b.conv(x, b.weight((4, 2, 1, 1), 4))]), 0.3, 4, signed=False)
    with pytest.raises(InputError, match=r"\(Add\).*different quantization scales"):
        import_qonnx(b.model((1, 2, 8, 8), b.op("Add", [y1, y2])))
