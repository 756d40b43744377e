"""Zoo models: structure, published folding, and validation against finn-examples' measured fps."""

from collections import Counter

import pytest
from elasticdf_partitioner.errors import InputError
from elasticdf_partitioner.models._builder import load_folding
from elasticdf_partitioner.zoo import ZOO, load_model, predicted_fps, zoo_names


@pytest.fixture(scope="module")
def resnet50():
    return load_model("resnet50")


@pytest.fixture(scope="module")
def mobilenet():
    return load_model("mobilenetv1")


def test_zoo_lists_models():
    assert zoo_names() == ["cnv", "mobilenetv1", "resnet50"]
    with pytest.raises(InputError) as err:
        load_model("vgg16")
    assert err.value.allowed == ["cnv", "mobilenetv1", "resnet50"]


def test_resnet50_inventory_matches_2021_build(resnet50):
    counts = Counter(layer.op for layer in resnet50.layers)
    assert counts == {"MVAU": 53, "ConvDoublePacked": 1, "Thresholding": 43, "ConvolutionInputGenerator": 18,
                      "FMPadding": 17, "DuplicateStreams": 16, "AddStreams": 16, "DownSampler": 3,
                      "ChannelwiseOp": 3, "Pool": 2, "LabelSelect": 1}
    config = load_folding("resnet50-U250-2021.json")
    assert {layer.name for layer in resnet50.layers} == set(config) - {"Defaults"}


def test_resnet50_residual_dag(resnet50):
    preds = Counter(v for _, v in resnet50.edges)
    succs = Counter(u for u, _ in resnet50.edges)
    for i, layer in enumerate(resnet50.layers):
        if layer.op == "AddStreams":
            assert preds[i] == 2
        elif i > 0:
            assert preds[i] == 1, layer.name
        if layer.op == "DuplicateStreams":
            assert succs[i] == 2
    downsamplers = [i for i, layer in enumerate(resnet50.layers) if layer.op == "DownSampler"]
    for i in downsamplers:  # strided shortcut: DuplicateStreams -> DownSampler -> 1x1 MVAU
        (pred,) = [u for u, v in resnet50.edges if v == i]
        assert resnet50.layers[pred].op == "DuplicateStreams"
        assert resnet50.layers[resnet50.successors(i)[0]].op == "MVAU"


def test_resnet50_published_folding(resnet50):
    assert resnet50.max_cycles() == 56448
    fc52 = resnet50.layers[resnet50.index("StreamingFCLayer_Batch_52")]
    assert fc52.current().settings()["mem_mode"] == "external"
    assert fc52.current().cycles == 32000
    assert resnet50.layers[0].current().cycles == 38416
    fc0 = resnet50.layers[resnet50.index("StreamingFCLayer_Batch_0")]
    assert dict(fc0.current().folding) == {"PE": 8, "SIMD": 32}


def test_mobilenet_published_folding(mobilenet):
    compute = [layer for layer in mobilenet.layers if layer.op in ("MVAU", "VVAU")]
    assert len(compute) == 15 + 13
    assert max(layer.current().cycles for layer in compute) == 110889
    # FINN v0.6's SWG formula adds the line-buffer fill (224·3 cycles) to the first conv's window generator
    assert mobilenet.max_cycles() == 111561
    assert len(mobilenet.ties) == 14
    mvau0 = mobilenet.layers[mobilenet.index("StreamingFCLayer_Batch_0")]
    assert mvau0.current().settings()["resType"] == "dsp"


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv1"])
def test_predicted_fps_within_10_percent_of_measured(name, resnet50, mobilenet):
    model = resnet50 if name == "resnet50" else mobilenet
    measured = ZOO[name].measured
    fps = predicted_fps(model, measured.fclk_mhz)
    assert abs(fps - measured.fps) / measured.fps < 0.10


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv1", "cnv"])
def test_folding_config_round_trip(name):
    model = load_model(name)
    config = model.folding_config()
    fresh = ZOO[name].build()
    for layer in fresh.layers:  # scramble the foldings, then re-apply the exported config
        layer.settings.update({a: 1 for a in layer.folding_attrs})
    fresh.apply_folding_config(config)
    assert [layer.current() for layer in fresh.layers] == [layer.current() for layer in model.layers]


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv1", "cnv"])
def test_options_bounded(name):
    model = load_model(name)
    for layer in model.layers:
        options = layer.options()
        assert 1 <= len(options) <= 300, layer.name
        assert len({(o.folding, o.variant) for o in options}) == len(options)
    for tie in model.ties:  # every consumer PE has a matching producer SIMD
        producer = model.layers[model.index(tie.producer)]
        consumer = model.layers[model.index(tie.consumer)]
        simds = {dict(o.folding)[tie.producer_attr] for o in producer.options()}
        pes = {dict(o.folding)[tie.consumer_attr] for o in consumer.options()}
        assert pes <= simds


def test_cnv_small():
    model = load_model("cnv")
    assert model.max_cycles() == 32768
    assert len(model.layers) == 19


def test_illegal_folding_names_node_and_allowed(mobilenet):
    model = load_model("cnv")
    with pytest.raises(InputError) as err:
        model.apply_folding_config({"StreamingFCLayer_Batch_1": {"PE": 3}})
    assert "StreamingFCLayer_Batch_1" in str(err.value) and "illegal folding" in str(err.value)
    assert {"PE": 1, "SIMD": 1} in err.value.allowed


def test_bad_configs():
    model = load_model("cnv")
    with pytest.raises(InputError, match="no layer named"):
        model.apply_folding_config({"NoSuchNode": {"PE": 1}})
    with pytest.raises(InputError, match="ram_style"):
        model.apply_folding_config({"ConvolutionInputGenerator_1": {"ram_style": "magnetic"}})
    with pytest.raises(InputError, match="positive integer"):
        model.apply_folding_config({"StreamingFCLayer_Batch_1": {"PE": "lots"}})
    with pytest.raises(InputError, match="Defaults"):
        model.apply_folding_config({"Defaults": {"PE": 4}})


def test_tie_violation_is_reported():
    model = load_model("mobilenetv1")
    with pytest.raises(InputError) as err:
        model.apply_folding_config({"ConvolutionInputGenerator_1": {"SIMD": 16}})
    assert "ConvolutionInputGenerator_1.SIMD" in str(err.value) and "Vector_Vector_Activate_Batch_0" in str(err.value)


def test_defaults_apply_by_finn_op_type():
    model = load_model("cnv")
    model.apply_folding_config({"Defaults": {"ram_style": ["block", ["StreamingFCLayer_Batch"]],
                                             "resType": ["dsp", "all"]}})
    mvaus = [layer for layer in model.layers if layer.op == "MVAU"]
    assert all(layer.current().settings()["ram_style"] == "block" for layer in mvaus)
    assert all(layer.current().settings()["resType"] == "dsp" for layer in mvaus)
    swg = model.layers[model.index("ConvolutionInputGenerator_0")]
    assert swg.current().settings()["ram_style"] == "distributed"
