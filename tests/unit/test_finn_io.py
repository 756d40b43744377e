"""FINN dataflow ONNX import (v0.6 and today's op names) and folding-config JSON I/O."""

import json

import onnx
import pytest
from elasticdf_partitioner.cluster import ClusterSpec, cluster_from_spec
from elasticdf_partitioner.errors import InputError
from elasticdf_partitioner.finn_io import (
    apply_folding_file,
    datatype_bits,
    import_onnx,
    read_folding_config,
    write_folding_config,
)
from elasticdf_partitioner.modelio import model_graph
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.zoo import load_model
from onnx import TensorProto, helper

V06 = {
    "pad": ("FMPadding_Batch", ""), "swg": ("ConvolutionInputGenerator", ""),
    "vvau": ("Vector_Vector_Activate_Batch", ""), "mvau": ("StreamingFCLayer_Batch", ""),
    "dup": ("DuplicateStreams_Batch", ""), "thr": ("Thresholding_Batch", ""), "add": ("AddStreams_Batch", ""),
    "fifo": ("StreamingFIFO", ""), "dwc": ("StreamingDataWidthConverter_Batch", ""),
    "top": ("LabelSelect_Batch", ""),
}
NEW = {
    "pad": ("FMPadding_rtl", ".rtl"), "swg": ("ConvolutionInputGenerator_rtl", ".rtl"),
    "vvau": ("VVAU_hls", ".hls"), "mvau": ("MVAU_hls", ".hls"), "dup": ("DuplicateStreams_hls", ".hls"),
    "thr": ("Thresholding_rtl", ".rtl"), "add": ("AddStreams_hls", ".hls"), "fifo": ("StreamingFIFO_rtl", ".rtl"),
    "dwc": ("StreamingDataWidthConverter_rtl", ".rtl"), "top": ("LabelSelect_hls", ".hls"),
}


def node(names, kind, inputs, outputs, name, **attrs):
    op, sub = names[kind]
    return helper.make_node(op, inputs, outputs, name=name, domain="finn.custom_op.fpgadataflow" + sub, **attrs)


def small_net(names, shuffle=False):
    """pad -> dw SWG -> VVAU -> pw MVAU -> FIFO -> dup -> (thr | MVAU) -> add -> DWC -> MVAU -> LabelSelect."""
    nodes = [
        node(names, "pad", ["in0"], ["t0"], "Pad_0", ImgDim=[8, 8], Padding=[1, 1, 1, 1], NumChannels=16, SIMD=4,
             inputDataType="UINT4"),
        node(names, "swg", ["t0"], ["t1"], "SWG_0", IFMDim=[10, 10], OFMDim=[8, 8], ConvKernelDim=[3, 3],
             IFMChannels=16, SIMD=4, Stride=[1, 1], depthwise=1, inputDataType="UINT4", ram_style="block"),
        node(names, "vvau", ["t1", "w0", "th0"], ["t2"], "VVAU_0", Channels=16, Kernel=[3, 3], Dim=[8, 8], PE=4,
             inputDataType="UINT4", weightDataType="INT4", outputDataType="UINT4", resType="lut"),
        node(names, "mvau", ["t2", "w1", "th1"], ["t3"], "MVAU_0", MW=16, MH=32, PE=8, SIMD=16,
             numInputVectors=[1, 8, 8], inputDataType="UINT4", weightDataType="INT4", outputDataType="UINT4",
             mem_mode="decoupled", ram_style="ultra", resType="dsp", noActivation=0),
        node(names, "fifo", ["t3"], ["t4"], "FIFO_0", depth=256, folded_shape=[1, 8, 8, 4, 32], dataType="UINT4",
             impl_style="vivado", ram_style="block"),
        node(names, "dup", ["t4"], ["t5a", "t5b"], "Dup_0", NumChannels=32, PE=8, numInputVectors=[1, 8, 8],
             inputDataType="UINT4"),
        node(names, "thr", ["t5a", "th2"], ["t6"], "Thr_0", NumChannels=32, PE=8, numInputVectors=[1, 8, 8],
             inputDataType="UINT4", outputDataType="UINT4"),
        node(names, "mvau", ["t5b", "w2", "th3"], ["t7"], "MVAU_1", MW=32, MH=32, PE=8, SIMD=8,
             numInputVectors=[1, 8, 8], inputDataType="UINT4", weightDataType="INT4", outputDataType="UINT4"),
        node(names, "add", ["t6", "t7"], ["t8"], "Add_0", NumChannels=32, PE=8, numInputVectors=[1, 8, 8],
             inputDataType="UINT4"),
        node(names, "dwc", ["t8"], ["t9"], "DWC_0", inWidth=40, outWidth=20, shape=[1, 8, 8, 32],
             dataType="UINT5"),
        node(names, "mvau", ["t9", "w3"], ["t10"], "MVAU_2", MW=32, MH=10, PE=1, SIMD=4,
             numInputVectors=[1, 8, 8], inputDataType="UINT5", weightDataType="INT4", outputDataType="INT16",
             noActivation=1),
        node(names, "top", ["t10"], ["out0"], "Top_0", Labels=10, PE=1, K=1, inputDataType="INT16",
             outputDataType="UINT8"),
    ]
    if shuffle:
        nodes = nodes[6:] + nodes[:6]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("in0", TensorProto.FLOAT, [1, 8, 8, 16])],
        [helper.make_tensor_value_info("out0", TensorProto.FLOAT, [1, 1])],
    )
    return helper.make_model(graph)


@pytest.mark.parametrize("names", [V06, NEW], ids=["finn-v0.6", "finn-today"])
def test_import_small_net(names, tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(small_net(names, shuffle=True), str(path))
    model = import_onnx(path)
    assert [layer.name for layer in model.layers] == [
        "Pad_0", "SWG_0", "VVAU_0", "MVAU_0", "FIFO_0", "Dup_0", "Thr_0", "MVAU_1", "Add_0", "DWC_0", "MVAU_2",
        "Top_0"]
    assert [layer.op for layer in model.layers][:4] == ["FMPadding", "ConvolutionInputGenerator", "VVAU", "MVAU"]
    assert (5, 6) in model.edges and (5, 7) in model.edges and (6, 8) in model.edges and (7, 8) in model.edges
    assert len(model.edges) == 12
    assert [(t.producer, t.consumer) for t in model.ties] == [("SWG_0", "VVAU_0")]
    pad, swg, vvau, mvau, fifo = model.layers[:5]
    assert pad.padding == 2 and pad.ofm == 10
    assert swg.ofm == 8 and swg.depthwise and swg.current().settings() == {"SIMD": 4, "ram_style": "block"}
    assert vvau.current().cycles == 16 * 9 // 4 * 64
    assert mvau.current().settings() == {"PE": 8, "SIMD": 16, "mem_mode": "decoupled", "ram_style": "ultra",
                                         "resType": "dsp"}
    assert mvau.current().cycles == (32 // 8) * (16 // 16) * 64
    assert mvau.wwidth_max == 64  # raised to the file's W·SIMD so its folding stays legal
    assert fifo.width == 128 and fifo.current_depth() == 256
    assert model.layers[10].activation is False and model.layers[10].obits == 16
    assert model.input_bits_per_frame == 8 * 8 * 16 * 4
    assert model.max_cycles() == max(layer.current().cycles for layer in model.layers)


POOL_SPELLINGS = {  # FINN v0.6 Pool_Batch: ints as scalars, OutImgDim; today's Pool_hls: lists, OutImgDims
    "finn-v0.6": ("Pool_Batch", "", dict(KernelSize=3, OutImgDim=4)),
    "finn-today": ("Pool_hls", ".hls", dict(KernelSize=[3, 3], OutImgDims=[4, 4])),
}


@pytest.mark.parametrize("spelling", sorted(POOL_SPELLINGS))
def test_pool_reads_finn_attribute_spellings_of_then_and_now(spelling):
    op_type, sub, attrs = POOL_SPELLINGS[spelling]
    swg = helper.make_node("ConvolutionInputGenerator", ["in0"], ["w"], name="SWG_0",
                           domain="finn.custom_op.fpgadataflow", IFMDim=[6, 6], OFMDim=[4, 4], ConvKernelDim=[3, 3],
                           IFMChannels=8, SIMD=2, Stride=[1, 1], depthwise=1, inputDataType="UINT4")
    pool = helper.make_node(op_type, ["w"], ["out0"], name="Pool_0", domain="finn.custom_op.fpgadataflow" + sub,
                            Channels=8, PE=2, Function="QuantAvgPool", InputDataType="UINT4", OutputDataType="UINT6",
                            **attrs)
    graph = helper.make_graph([swg, pool], "pool", [helper.make_tensor_value_info("in0", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("out0", TensorProto.FLOAT, None)])
    layer = import_onnx(helper.make_model(graph)).layers[1]
    assert (layer.op, layer.kernel, layer.ofm, layer.ibits, layer.obits) == ("Pool", 3, 4, 4, 6)
    assert layer.current().cycles == 8 * 9 // 2 * 4 * 4


def test_load_model_accepts_onnx_path(tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(small_net(V06), str(path))
    assert model_graph(str(path)).name == "net"


def test_iodma_is_bypassed(tmp_path):
    proto = small_net(V06)
    nodes = list(proto.graph.node)
    nodes[0].input[0] = "dma_out"
    dma = helper.make_node("IODMA", ["in0"], ["dma_out"], name="IODMA_0", domain="finn.custom_op.fpgadataflow")
    del proto.graph.node[:]
    proto.graph.node.extend([dma, *nodes])
    model = import_onnx(proto)
    assert model.layers[0].name == "Pad_0" and len(model.layers) == 12


def test_unknown_op_names_node(tmp_path):
    proto = small_net(V06)
    proto.graph.node[3].op_type = "StreamingFCLayer_Turbo"
    with pytest.raises(InputError) as err:
        import_onnx(proto)
    assert "MVAU_0" in str(err.value) and "StreamingFCLayer_Turbo" in str(err.value)
    assert "MVAU_hls" in err.value.allowed


def test_non_dataflow_node_is_rejected():
    proto = small_net(V06)
    proto.graph.node[2].domain = ""
    with pytest.raises(InputError, match="VVAU_0.*not a FINN dataflow domain"):
        import_onnx(proto)


def test_missing_attribute_and_bad_datatype():
    proto = small_net(V06)
    attrs = proto.graph.node[3].attribute
    attrs.remove(next(a for a in attrs if a.name == "MW"))
    with pytest.raises(InputError, match=r"MVAU_0 \(StreamingFCLayer_Batch\)\.MW: missing attribute"):
        import_onnx(proto)
    proto = small_net(V06)
    for attr in proto.graph.node[6].attribute:
        if attr.name == "inputDataType":
            attr.s = b"QUATERNION8"
    with pytest.raises(InputError, match="Thr_0.*inputDataType.*unknown FINN datatype"):
        import_onnx(proto)


def test_malformed_onnx_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf \x00\xff\x12")
    with pytest.raises(InputError, match="malformed ONNX"):
        import_onnx(bad)
    with pytest.raises(InputError, match="file not found"):
        import_onnx(tmp_path / "missing.onnx")


def test_cycle_is_rejected():
    proto = small_net(V06)
    proto.graph.node[0].input[0] = "t3"  # pad consumes MVAU_0's output
    with pytest.raises(InputError, match="cycle"):
        import_onnx(proto)


@pytest.mark.parametrize("text,bits", [("BIPOLAR", 1), ("BINARY", 1), ("TERNARY", 2), ("INT8", 8), ("UINT4", 4),
                                       ("FIXED<8,4>", 8), ("FLOAT32", 32)])
def test_datatype_bits(text, bits):
    assert datatype_bits(text) == bits


def test_folding_json_round_trip(tmp_path):
    model = load_model("mobilenetv1")
    path = write_folding_config(model.folding_config(), tmp_path / "out" / "folding.json")
    fresh = load_model("mobilenetv1")
    apply_folding_file(fresh, path)
    assert [layer.current() for layer in fresh.layers] == [layer.current() for layer in model.layers]
    config = read_folding_config(path)
    assert config["StreamingFIFO_0"]["depth"] == 512


def test_malformed_folding_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"MVAU_0\": {\"PE\": 4,}")
    with pytest.raises(InputError, match="malformed JSON"):
        read_folding_config(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(InputError, match="expected a JSON object"):
        read_folding_config(bad)
    bad.write_text(json.dumps({"MVAU_0": 4}))
    with pytest.raises(InputError, match="MVAU_0"):
        read_folding_config(bad)
    with pytest.raises(InputError, match="file not found"):
        read_folding_config(tmp_path / "nope.json")


def test_segment_onnx_export(tmp_path):
    from elasticdf_partitioner.finn_io import write_segment_onnx
    from elasticdf_partitioner.plan import Instance, Plan, Segment

    path = tmp_path / "net.onnx"
    onnx.save(small_net(NEW), str(path))

    def segment(card, first, last):
        return Segment(node="n0", card=card, card_type="u280", slrs=[0], layers=["?", "?"], layer_range=[first, last],
                       ingress_gbps=0, egress_gbps=0, resources={}, utilisation={}, slr_layers={"0": [first, last]})

    plan = Plan(objective="throughput", model="net", fclk_mhz=200, total_fps=1, cards_used=2, cost_per_hour=1,
                fps_per_dollar_hour=1, solve_seconds=0, bound=None, optimal=True,
                folding={"MVAU_1": {"PE": 4, "SIMD": 8}},
                instances=[Instance(fps=1, fclk_mhz=200, cycles_per_frame=1, latency_ms=1,
                                    segments=[segment(0, 0, 6), segment(1, 7, 11)])])
    files = write_segment_onnx(plan, path, tmp_path / "out")
    assert [f.name for f in files] == ["segment0_n0-card0.onnx", "segment1_n0-card1.onnx"]
    first, second = (onnx.load(str(f)).graph for f in files)
    assert [n.name for n in first.node] == ["Pad_0", "SWG_0", "VVAU_0", "MVAU_0", "FIFO_0", "Dup_0", "Thr_0"]
    # the cut crosses both residual branches: Dup_0 -> MVAU_1 and Thr_0 -> Add_0
    assert sorted(o.name for o in first.output) == ["t5b", "t6"]
    assert {"t5b", "t6"} <= {i.name for i in second.input}  # (plus this test's weight names, not initializers)
    mvau1 = next(n for n in second.node if n.name == "MVAU_1")
    assert helper.get_attribute_value(next(a for a in mvau1.attribute if a.name == "PE")) == 4
    assert import_onnx(onnx.load(str(files[1]))).layers[0].name == "MVAU_1"


def test_cli_plan_of_an_onnx_model_writes_segment_onnx(tmp_path, capsys):
    from elasticdf_partitioner.cli import main

    path = tmp_path / "net.onnx"
    onnx.save(small_net(V06), str(path))
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("nodes:\n  - {name: n0, cards: [u280]}\n")
    code = main(["plan", "--model", str(path), "--cluster", str(cluster), "--finn-out", str(tmp_path / "finn")])
    assert code == 0, capsys.readouterr().err
    segments = list((tmp_path / "finn").rglob("*.onnx"))
    assert segments
    assert import_onnx(onnx.load(str(segments[0]))).layers[0].name == "Pad_0"


def test_a_small_finn_net_plans_on_two_cards_it_fits_thousands_of_times(tmp_path):
    """A 12-layer dataflow net fits two U280s thousands of times. The shared-route search places instances of one
    level together, and its recursion goes two frames deep per stage and instance: it starts at the count that
    beats what the two cards plan apart and stops where the stack would run out (SHARED_MAX_FRAMES), so the plan
    is made (it ran out of stack counting up from one instance)."""
    path = tmp_path / "net.onnx"
    onnx.save(small_net(NEW), str(path))
    cluster = cluster_from_spec(ClusterSpec(nodes=[{"name": "a", "cards": ["u280"]}, {"name": "b", "cards": ["u280"]}]))
    plan = solve(import_onnx(path), cluster)
    assert plan.total_fps > 2 * solve(import_onnx(path), cluster_from_spec(ClusterSpec(nodes=[
        {"name": "a", "cards": ["u280"]}]))).total_fps * 0.99
