"""Each op's emulation lowering (standard ONNX run by onnxruntime) against the independent numpy reference of
FINN's semantics in finn_reference.py, over shapes, datatypes, folding, padding/stride/dilation."""

from __future__ import annotations

import finn_reference
import numpy as np
import onnxruntime as ort
import pytest
from elasticdf_partitioner.emulation import lower_model
from elasticdf_partitioner.errors import InputError
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

SETTINGS = settings(max_examples=20, deadline=None)
ACTIVATIONS = ["BINARY", "BIPOLAR", "UINT2", "UINT4", "INT3", "UINT8"]


def node(op_type, inputs, outputs, name, **attrs):
    domain = "finn.custom_op.fpgadataflow" + (".hls" if op_type.endswith("_hls") else
                                              ".rtl" if op_type.endswith("_rtl") else "")
    return helper.make_node(op_type, inputs, outputs, name=name, domain=domain, **attrs)


def finn_model(nodes, params: dict[str, np.ndarray], in_shape, outputs=("y",)):
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in params.items()])
    return helper.make_model(graph)


def emulate(model, x: np.ndarray) -> list[np.ndarray]:
    lowered = lower_model(model)
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})


def values(rng, dtype: str, shape) -> np.ndarray:
    lo, hi = finn_reference.dtype_range(dtype)
    if dtype == "BIPOLAR":
        return (2 * rng.integers(0, 2, shape) - 1).astype(np.float32)
    return rng.integers(lo, hi + 1, shape).astype(np.float32)


def assert_equal_to_reference(model, x, outputs=("y",)):
    expected = finn_reference.run(model, x)
    got = emulate(model, x)
    for name, value in zip(outputs, got):
        np.testing.assert_array_equal(value, expected[name].reshape(value.shape))
        assert value.shape == tuple(np.shape(expected[name])) or value.size == np.size(expected[name])
    return got


def divisor(draw, n):
    return draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))


# --- MVAU and Thresholding --------------------------------------------------------------------------------


@st.composite
def mvau_cases(draw):
    mw, mh = draw(st.integers(1, 40)), draw(st.integers(1, 12))
    idt = draw(st.sampled_from(ACTIVATIONS))
    xnor = idt == "BINARY" and draw(st.booleans())
    wdt = "BINARY" if xnor else draw(st.sampled_from(["BIPOLAR", "INT2", "INT4", "INT8"]))
    activation = draw(st.booleans())
    odt = draw(st.sampled_from(["BIPOLAR", "BINARY", "UINT2", "UINT3", "INT2"])) if activation else "INT32"
    side = draw(st.integers(1, 3))
    vectors = draw(st.sampled_from([[1], [1, side, side]]))
    return dict(mw=mw, mh=mh, idt=idt, wdt=wdt, xnor=xnor, activation=activation, odt=odt, vectors=vectors,
                pe=divisor(draw, mh), simd=divisor(draw, mw), seed=draw(st.integers(0, 2 ** 16)),
                actval=draw(st.sampled_from([0, -2, 1])))


@SETTINGS
@given(mvau_cases())
def test_mvau_matches_reference(case):
    rng = np.random.default_rng(case["seed"])
    weights = values(rng, case["wdt"], (case["mw"], case["mh"]))
    x = values(rng, case["idt"], (*case["vectors"], case["mw"]))
    params = {"w": weights}
    inputs = ["x", "w"]
    if case["activation"]:  # thresholds inside the accumulator's actual range, so the outputs vary
        acc = finn_reference.matrix(x, weights, {"binaryXnorMode": case["xnor"], "inputDataType": case["idt"],
                                                 "weightDataType": case["wdt"]})
        steps = 1 if case["odt"] in ("BIPOLAR", "BINARY") else 2 ** int(case["odt"][-1]) - 1
        params["t"] = rng.integers(acc.min(), acc.max() + 2, (case["mh"], steps))
        inputs.append("t")
    model = finn_model([node("MVAU_hls", inputs, ["y"], "mvau", MW=case["mw"], MH=case["mh"], PE=case["pe"],
                             SIMD=case["simd"], inputDataType=case["idt"], weightDataType=case["wdt"],
                             outputDataType=case["odt"], noActivation=int(not case["activation"]),
                             binaryXnorMode=int(case["xnor"]), ActVal=case["actval"],
                             numInputVectors=case["vectors"])], params, x.shape)
    assert_equal_to_reference(model, x)


def test_mvau_wide_accumulator_is_exact_in_float64():
    """2048 INT8 weights times UINT8 inputs reach 2**26: the lowering computes (and outputs) in float64."""
    mw, mh = 2048, 3
    weights = np.full((mw, mh), 127, np.float32)
    weights[:, 1] = -128
    weights[::3, 2] = -128
    x = np.full((1, mw), 255, np.float32)
    x[0, 1::2] = 254
    model = finn_model([node("MVAU_hls", ["x", "w"], ["y"], "fc", MW=mw, MH=mh, PE=1, SIMD=1, inputDataType="UINT8",
                             weightDataType="INT8", outputDataType="INT27", noActivation=1)], {"w": weights}, x.shape)
    (got,) = assert_equal_to_reference(model, x)
    assert got.dtype == np.float64 and abs(got).max() > 2 ** 24


@SETTINGS
@given(st.integers(1, 8), st.sampled_from([*ACTIVATIONS[2:], "INT24"]), st.sampled_from(["BIPOLAR", "UINT2", "UINT4"]),
       st.booleans(), st.sampled_from([0, 1, -3]), st.integers(0, 2 ** 16))
def test_thresholding_matches_reference(channels, idt, odt, image, actval, seed):
    """Small input types take the table lookup, INT24 the comparisons."""
    rng = np.random.default_rng(seed)
    lo, hi = finn_reference.dtype_range(idt)
    steps = 1 if odt == "BIPOLAR" else 2 ** int(odt[4:]) - 1
    shared = rng.integers(0, 2) == 1  # one row of thresholds for every channel
    thresholds = rng.integers(lo, hi + 2, (1 if shared else channels, steps))
    vectors = [1, 3, 3] if image else [1]
    x = values(rng, idt, (*vectors, channels))
    model = finn_model([node("Thresholding_hls", ["x", "t"], ["y"], "thr", NumChannels=channels, PE=1,
                             numSteps=steps, inputDataType=idt, weightDataType="INT9", outputDataType=odt,
                             ActVal=actval, numInputVectors=vectors)], {"t": thresholds}, x.shape)
    assert_equal_to_reference(model, x)


# --- sliding windows, depthwise convolution, pooling --------------------------------------------------------


@st.composite
def window_cases(draw):
    k, stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    ifm = draw(st.integers(dilation * (k - 1) + 1, 9))
    channels = draw(st.sampled_from([1, 2, 4, 6]))
    return dict(k=k, stride=stride, dilation=dilation, ifm=ifm, channels=channels, simd=divisor(draw, channels),
                depthwise=draw(st.booleans()), pad=draw(st.integers(0, 2)), seed=draw(st.integers(0, 2 ** 16)))


def ofm_of(case, ifm):
    return (ifm - case["dilation"] * (case["k"] - 1) - 1) // case["stride"] + 1


def swg_node(case, src, dst, ifm, idt="UINT4", op_type="ConvolutionInputGenerator_rtl"):
    k, ofm = case["k"], ofm_of(case, ifm)
    return node(op_type, [src], [dst], "swg", ConvKernelDim=[k, k], IFMChannels=case["channels"],
                IFMDim=[ifm, ifm], OFMDim=[ofm, ofm], SIMD=case["simd"], Stride=[case["stride"]] * 2,
                Dilation=[case["dilation"]] * 2, inputDataType=idt, outputDataType=idt,
                depthwise=int(case["depthwise"]))


@SETTINGS
@given(window_cases())
def test_sliding_window_matches_reference(case):
    rng = np.random.default_rng(case["seed"])
    x = values(rng, "UINT4", (1, case["ifm"], case["ifm"], case["channels"]))
    assert_equal_to_reference(finn_model([swg_node(case, "x", "y", case["ifm"])], {}, x.shape), x)


def direct_windows(img, k, stride, dilation, ofm):
    """(OFM, OFM, K, K, C) windows of an (H, W, C) image, indexed directly."""
    rows = (np.arange(ofm) * stride)[:, None] + np.arange(k) * dilation  # (OFM, K)
    return img[rows[:, None, :, None], rows[None, :, None, :]]


@SETTINGS
@given(window_cases(), st.sampled_from(["UINT4", "INT4", "BIPOLAR"]), st.booleans())
def test_padding_window_vvau_is_a_depthwise_convolution(case, wdt, activation):
    """FMPadding -> depthwise SWG (SIMD lanes) -> VVAU (PE = SIMD) equals a direct depthwise convolution."""
    case["depthwise"] = True
    rng = np.random.default_rng(case["seed"])
    idt = "BIPOLAR" if wdt == "BIPOLAR" else "UINT4"
    if idt == "BIPOLAR":  # zero padding is not a bipolar value
        case["pad"] = 0
    c, k, ifm, pad = case["channels"], case["k"], case["ifm"], case["pad"]
    img = values(rng, idt, (1, ifm, ifm, c))
    weights = values(rng, "BIPOLAR" if wdt == "BIPOLAR" else "INT4", (c, 1, k, k))
    padded = ifm + 2 * pad
    ofm = ofm_of(case, padded)
    params, vvau_inputs = {"w": weights}, ["win", "w"]
    if activation:
        params["t"] = np.sort(rng.integers(-20, 21, (c, 3)), axis=1)
        vvau_inputs.append("t")
    model = finn_model([
        node("FMPadding_hls", ["x"], ["padded"], "pad", ImgDim=[ifm, ifm], Padding=[pad] * 4, NumChannels=c,
             SIMD=case["simd"], inputDataType=idt),
        swg_node(case, "padded", "win", padded, idt),
        node("VVAU_hls", vvau_inputs, ["y"], "vvau", Channels=c, Kernel=[k, k], Dim=[ofm, ofm], PE=case["simd"],
             inputDataType=idt, weightDataType="BIPOLAR" if wdt == "BIPOLAR" else "INT4",
             outputDataType="UINT2" if activation else "INT16", noActivation=int(not activation)),
    ], params, img.shape)
    (got,) = assert_equal_to_reference(model, img)
    win = direct_windows(np.pad(img[0], ((pad, pad), (pad, pad), (0, 0))), k, case["stride"], case["dilation"], ofm)
    w = weights[:, 0].transpose(1, 2, 0)  # (K, K, C)
    acc = ((win == w) if wdt == "BIPOLAR" else win * w).sum(axis=(2, 3))
    if activation:
        acc = (acc[..., None] >= params["t"]).sum(axis=-1)
    np.testing.assert_array_equal(got[0], acc)


@SETTINGS
@given(window_cases(), st.sampled_from(["MaxPool", "QuantAvgPool"]), st.integers(2, 6))
def test_window_pool_matches_direct_pooling(case, function, obits):
    case["depthwise"], case["dilation"] = True, 1
    rng = np.random.default_rng(case["seed"])
    c, k, ifm = case["channels"], case["k"], case["ifm"]
    img = values(rng, "UINT4", (1, ifm, ifm, c))
    ofm = ofm_of(case, ifm)
    odt = "UINT4" if function == "MaxPool" else f"UINT{obits}"
    model = finn_model([
        swg_node(case, "x", "win", ifm, op_type="ConvolutionInputGenerator_hls"),
        node("Pool_hls", ["win"], ["y"], "pool", Channels=c, PE=case["simd"], KernelSize=[k, k], Function=function,
             OutImgDims=[ofm, ofm], InputDataType="UINT4", OutputDataType=odt),
    ], {}, img.shape)
    (got,) = assert_equal_to_reference(model, img)
    win = direct_windows(img[0], k, case["stride"], 1, ofm).astype(np.int64)
    if function == "MaxPool":
        expected = win.max(axis=(2, 3))
    else:
        expected = win.sum(axis=(2, 3)) >> max(0, (15 * k * k).bit_length() - obits)
    np.testing.assert_array_equal(got[0], expected)


@SETTINGS
@given(st.integers(2, 9), st.integers(1, 3), st.sampled_from([1, 3]), st.integers(0, 2 ** 16))
def test_streaming_maxpool_matches_reference(ifm, pool, channels, seed):
    assume(pool <= ifm)
    rng = np.random.default_rng(seed)
    x = values(rng, "INT3", (1, ifm, ifm, channels))
    model = finn_model([node("StreamingMaxPool_hls", ["x"], ["y"], "mp", ImgDim=[ifm, ifm], PoolDim=[pool, pool],
                             NumChannels=channels, dataType="INT3")], {}, x.shape)
    (got,) = assert_equal_to_reference(model, x)
    assert got.shape == (1, ifm // pool, ifm // pool, channels)


@SETTINGS
@given(st.integers(1, 7), st.lists(st.integers(0, 3), min_size=4, max_size=4), st.integers(1, 3),
       st.integers(0, 2 ** 16))
def test_padding_and_downsampler_match_reference(ifm, pad, stride, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, "UINT2", (1, ifm, ifm, 3))
    padded = ifm + pad[0] + pad[2]
    if padded != ifm + pad[1] + pad[3]:  # FINN images are square
        pad[3] = pad[0] + pad[2] - pad[1]
    if pad[3] < 0:
        return
    model = finn_model([
        node("FMPadding_rtl", ["x"], ["p"], "pad", ImgDim=[ifm, ifm], Padding=pad, NumChannels=3, SIMD=1,
             inputDataType="UINT2"),
        node("DownSampler_hls", ["p"], ["y"], "down", ImgDim=padded, NumChannels=3, SIMD=3, Stride=stride,
             inputDataType="UINT2"),
    ], {}, x.shape)
    assert_equal_to_reference(model, x)


@SETTINGS
@given(st.integers(1, 6), st.integers(2, 4), st.sampled_from([0, 1]), st.sampled_from(["UINT2", "INT3", "UINT8"]),
       st.integers(1, 5), st.integers(0, 2 ** 16))
def test_upsample_nearest_neighbour_matches_reference(ifm, scale, dim_mode, idt, channels, seed):
    rng = np.random.default_rng(seed)
    shape = (1, ifm, ifm if dim_mode == 0 else 1, channels)
    x = values(rng, idt, shape)
    model = finn_model([node("UpsampleNearestNeighbour_hls", ["x"], ["y"], "up", OFMDim=ifm * scale, IFMDim=ifm,
                             NumChannels=channels, inputDataType=idt, numInputVectors=1, DimMode=dim_mode)],
                       {}, shape)
    assert_equal_to_reference(model, x)


def test_upsample_by_a_non_integer_factor_names_the_node():
    model = finn_model([node("UpsampleNearestNeighbour_hls", ["x"], ["y"], "up", OFMDim=5, IFMDim=3, NumChannels=1,
                             inputDataType="UINT2")], {}, (1, 3, 3, 1))
    with pytest.raises(InputError, match=r"node up \(UpsampleNearestNeighbour_hls\).OFMDim.*multiple"):
        lower_model(model)


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 4), st.sampled_from(["UINT4", "INT3"]), st.integers(1, 4),
       st.integers(0, 2 ** 16))
def test_pixel_padding_matches_reference(ifm, stride, idt, channels, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, idt, (1, ifm, ifm, channels))
    model = finn_model([node("FMPadding_Pixel_hls", ["x"], ["y"], "pix", ImgDim=[ifm, ifm], Stride=[stride, stride],
                             NumChannels=channels, SIMD=1, inputDataType=idt, numInputVectors=1)], {}, x.shape)
    assert_equal_to_reference(model, x)


# --- streams, channelwise, label select, FIFOs and width converters -----------------------------------------


@SETTINGS
@given(st.integers(1, 6), st.sampled_from(["UINT4", "INT3"]), st.integers(0, 2 ** 16))
def test_duplicate_fifo_dwc_add_streams(channels, idt, seed):
    """DuplicateStreams -> (FIFO | DWC) -> AddStreams doubles the input; each branch is an identity."""
    rng = np.random.default_rng(seed)
    x = values(rng, idt, (1, 2, 2, channels))
    common = dict(NumChannels=channels, PE=1, inputDataType=idt, numInputVectors=[1, 2, 2])
    model = finn_model([
        node("DuplicateStreams_hls", ["x"], ["a", "b"], "dup", NumOutputStreams=2, **common),
        node("StreamingFIFO_rtl", ["a"], ["a2"], "fifo", depth=16, folded_shape=[1, 4, channels], dataType=idt),
        node("StreamingDataWidthConverter_hls", ["b"], ["b2"], "dwc", inWidth=4, outWidth=8,
             shape=[1, 2, 2, channels], dataType=idt),
        node("AddStreams_hls", ["a2", "b2"], ["y"], "add", **common),
    ], {}, x.shape, outputs=("y", "a2"))
    got = assert_equal_to_reference(model, x, outputs=("y", "a2"))
    np.testing.assert_array_equal(got[0], 2 * x)
    np.testing.assert_array_equal(got[1], x)


@SETTINGS
@given(st.integers(1, 8), st.sampled_from(["add", "mul"]), st.sampled_from(["INT8", "UINT4"]), st.integers(0, 2 ** 16))
def test_channelwise_matches_reference(channels, func, idt, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, idt, (1, 3, 3, channels))
    params = rng.integers(-5, 6, channels)
    model = finn_model([node("ChannelwiseOp_hls", ["x", "p"], ["y"], "cw", Func=func, NumChannels=channels, PE=1,
                             inputDataType=idt, paramDataType="INT4", outputDataType="INT12",
                             numInputVectors=[1, 3, 3])], {"p": params}, x.shape)
    assert_equal_to_reference(model, x)


@SETTINGS
@given(st.integers(2, 30), st.integers(1, 5), st.sampled_from(["UINT2", "INT16"]), st.integers(0, 2 ** 16))
def test_labelselect_matches_reference_with_ties(labels, k, idt, seed):
    """Few-bit scores tie often: the lower index comes first, as ONNX TopK (FINN's execution) orders them."""
    k = min(k, labels)
    rng = np.random.default_rng(seed)
    x = values(rng, idt, (1, labels))
    model = finn_model([node("LabelSelect_hls", ["x"], ["y"], "top", Labels=labels, PE=1, K=k, inputDataType=idt,
                             outputDataType="UINT8")], {}, x.shape)
    assert_equal_to_reference(model, x)


@pytest.mark.parametrize("activation", [True, False])
def test_conv_double_packed_matches_direct_convolution(activation):
    rng = np.random.default_rng(7)
    ifm, c, k, stride, pad, mh = 11, 3, 7, 2, 3, 8
    ofm = (ifm + 2 * pad - k) // stride + 1
    img = values(rng, "UINT8", (1, ifm, ifm, c))
    weights = values(rng, "INT8", (k * k * c, mh))
    params, inputs = {"w": weights}, ["x", "w"]
    if activation:
        params["t"] = np.sort(rng.integers(-40000, 40000, (mh, 3)), axis=1)
        inputs.append("t")
    model = finn_model([node("ConvDoublePacked_Batch", inputs, ["y"], "conv0", ConvKernelDim=k, IFMChannels=c,
                             IFMDim=ifm, OFMChannels=mh, OFMDim=ofm, Stride=stride, Padding=pad, SIMD=3, PE=4, MMV=2,
                             MW=k * k * c, MH=mh, inputDataType="UINT8", weightDataType="INT8",
                             outputDataType="UINT2" if activation else "INT24", noActivation=int(not activation),
                             numInputVectors=[1, ofm, ofm])], params, img.shape)
    (got,) = assert_equal_to_reference(model, img)
    win = direct_windows(np.pad(img[0], ((pad, pad), (pad, pad), (0, 0))), k, stride, 1, ofm)
    acc = win.reshape(ofm, ofm, -1).astype(np.int64) @ weights.astype(np.int64)
    if activation:
        acc = (acc[..., None] >= params["t"]).sum(axis=-1)
    np.testing.assert_array_equal(got[0], acc)


def test_lowered_nodes_are_named_by_layer_in_import_order():
    from elasticdf_partitioner.finn_io import import_onnx

    x_shape = (1, 4, 4, 2)
    common = dict(NumChannels=2, PE=1, inputDataType="UINT2", numInputVectors=[1, 4, 4])
    nodes = [  # file order differs from topological order
        node("AddStreams_hls", ["a", "b"], ["y"], "add", **common),
        node("DuplicateStreams_hls", ["x"], ["a", "b"], "dup", NumOutputStreams=2, **common),
    ]
    model = finn_model(nodes, {}, x_shape)
    lowered = lower_model(model)
    layers = list(dict.fromkeys(n.name.split("/", 1)[0] for n in lowered.graph.node))
    assert layers == [layer.name for layer in import_onnx(model).layers] == ["dup", "add"]
    assert [i.name for i in lowered.graph.input] == ["x"] and [o.name for o in lowered.graph.output] == ["y"]


def test_unsupported_channelwise_function_names_node():
    model = finn_model([node("ChannelwiseOp_hls", ["x", "p"], ["y"], "cmp", Func="cmp_le", NumChannels=1, PE=1,
                             inputDataType="UINT2", paramDataType="INT2", outputDataType="BINARY")],
                       {"p": np.zeros(1)}, (1, 1))
    with pytest.raises(InputError, match="cmp.*Func.*cmp_le"):
        lower_model(model)
