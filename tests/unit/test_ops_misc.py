"""Thresholding, ChannelwiseOp, FIFO, DWC and the small ops against hand-computed values."""

import pytest
from elasticdf_partitioner.errors import InputError
from elasticdf_partitioner.ops import (
    FINN_OP_TYPES,
    AddStreams,
    ChannelwiseOp,
    DownSampler,
    DuplicateStreams,
    FMPadding,
    FMPaddingPixel,
    LabelSelect,
    Pool,
    StreamingDataWidthConverter,
    StreamingFIFO,
    Thresholding,
    UpsampleNearestNeighbour,
    canonical_op,
    op_class,
)


def test_thresholding():
    layer = Thresholding("t", channels=256, n_vec=3136, ibits=5, obits=4)
    assert layer.cycles({"PE": 32}) == 25088  # 3136·256/32
    # TMEM = 8: distributed LUT = A·P + P·A·ceil(8/64) = 160 + 160
    assert layer.resources({"PE": 32}, {"ram_style": "distributed"}).lut == 320
    # block: LUT = A·P = 160; BRAM = ceil(5·32/16)·ceil(8/1024) = 10
    r = layer.resources({"PE": 32}, {"ram_style": "block"})
    assert (r.lut, r.bram18) == (160, 10)
    # TMEM = 1 (PE = C): comparators only
    r = layer.resources({"PE": 256}, {"ram_style": "block"})
    assert (r.lut, r.bram18) == (5 * 256, 0)
    assert layer.out_width({"PE": 32}) == 128


def test_channelwise_same_model_as_thresholds():
    layer = ChannelwiseOp("c", channels=1000, n_vec=1, ibits=18, obits=18)
    assert layer.op == "ChannelwiseOp"
    assert layer.cycles({"PE": 1}) == 1000
    # TMEM = 1000: LUT = 18 + 18·ceil(1000/64) = 18 + 288
    assert layer.resources({"PE": 1}, {"ram_style": "distributed"}).lut == 306


def test_fifo():
    fifo = StreamingFIFO("f", width=64, depth=2048, bits_per_frame=64 * 100)
    # vivado ultra: LUT = 2·ceil(log2 2048) = 22; URAM = ceil(2048/4096)·ceil(64/72) = 1
    r = fifo.resources({}, {"impl_style": "vivado", "ram_style": "ultra"})
    assert (r.lut, r.uram, r.bram18) == (22, 1, 0)
    # vivado block: RAMB18 rule with depth 2048 > 512 and width 64 > 18 -> ceil(2048/1024)·ceil(64/18) = 8
    assert fifo.resources({}, {"impl_style": "vivado", "ram_style": "block"}).bram18 == 8
    # rtl: 22 + ceil(2048/32)·ceil(64/2) = 22 + 64·32
    assert fifo.resources({}, {"impl_style": "rtl", "ram_style": "auto"}).lut == 22 + 2048
    assert fifo.cycles({}) == 100  # words per frame (our choice; FINN says 0)


def test_fifo_depth_from_settings_changes_options():
    fifo = StreamingFIFO("f", width=128, depth=32, bits_per_frame=128)
    small = fifo.options()
    fifo.settings["depth"] = 256
    # rtl: 2·8 + ceil(256/32)·ceil(128/2) = 16 + 512
    assert fifo.current().res.lut == 528
    assert fifo.options() is not small
    assert fifo.extra_settings() == {"depth": 256}


@pytest.mark.parametrize("inw,outw,lut", [
    (128, 64, 65),  # lcm 128 = in; down: ceil(log2 2) + 64
    (64, 128, 129),  # lcm 128: up: |ceil(log2 0.5)| + 128
    (72, 18, 20),  # ceil(log2 4) + 18
    (24, 16, 67),  # lcm 48: 1 + 48 up, ceil(log2 3) + 16 down
])
def test_dwc(inw, outw, lut):
    dwc = StreamingDataWidthConverter("d", in_width_bits=inw, out_bits=outw, bits_per_frame=inw * outw)
    assert dwc.resources({}, {}).lut == lut
    assert dwc.cycles({}) == max(inw, outw)  # bits / narrower width


def test_small_ops():
    add = AddStreams("a", channels=256, n_vec=3136, ibits=4)
    assert add.cycles({"PE": 32}) == 25088 and add.resources({"PE": 32}, {}).lut == 50 + 32 * 5
    assert add.out_width({"PE": 32}) == 32 * 5
    dup = DuplicateStreams("d", channels=64, n_vec=3136, ibits=2)
    assert dup.cycles({"PE": 32}) == 6272 and dup.resources({"PE": 32}, {}).lut == 50 + 64
    pad = FMPadding("p", channels=64, ifm=56, ibits=2, padding=2)
    assert pad.cycles({"SIMD": 64}) == 58 * 58 and pad.resources({"SIMD": 64}, {}).lut == 178
    ds = DownSampler("s", channels=256, ifm=56, ibits=2, stride=2)
    assert ds.ofm == 28 and ds.cycles({"SIMD": 64}) == 4 * 56 * 56
    pool = Pool("m", channels=64, kernel=3, ofm=56, ibits=2)
    assert pool.cycles({"PE": 64}) == 28224 and pool.resources({"PE": 64}, {}).lut == 178  # (64·9/64)·56²
    avg = Pool("g", channels=2048, kernel=7, ofm=1, ibits=5, function="QuantAvgPool")
    assert avg.obits == 5 + 6  # accumulates 49 values
    top = LabelSelect("l", labels=1000, k=5, ibits=27, obits=16)
    assert top.cycles({"PE": 1}) == 1000 and top.out_bits_per_frame == 80
    assert [f["PE"] for f in top.foldings()][:4] == [1, 2, 4, 5]


def test_upsampling_ops():
    up = UpsampleNearestNeighbour("u", channels=32, ifm=128, scale=2, ibits=8)
    # FINN get_exp_cycles: OFMDim² per frame; no folding
    assert up.ofm == 256 and up.foldings() == [{}] and up.cycles({}) == 256 * 256
    # row buffer of 128 pixels × 256 bits: RAMB18 rule, depth <= 512 and width > 18: ceil(128/512)·ceil(256/36)
    r = up.resources({}, {})
    assert (r.lut, r.bram18) == (50 + 256, 8)
    assert up.out_width({}) == 256 and up.out_bits_per_frame == 256 * 256 * 256
    line = UpsampleNearestNeighbour("u1", channels=4, ifm=10, scale=3, ibits=2, dim_mode=1)
    assert line.cycles({}) == 30 and line.resources({}, {}).bram18 == 0  # 1D: one pixel held in registers
    pix = FMPaddingPixel("p", channels=64, ifm=128, ibits=4, stride=2)
    # FINN get_exp_cycles: (C/SIMD)·OFM², OFM = 128 + 127·1
    assert pix.ofm == 255 and pix.cycles({"SIMD": 16}) == 4 * 255 * 255
    assert pix.resources({"SIMD": 16}, {}).lut == 50 + 16 * 4


def test_registry_maps_old_and_new_names():
    assert canonical_op("UpsampleNearestNeighbour_Batch") == canonical_op("UpsampleNearestNeighbour_hls")
    assert canonical_op("FMPadding_Pixel_hls") == "FMPadding_Pixel"
    assert canonical_op("StreamingFCLayer_Batch") == canonical_op("MVAU_rtl") == "MVAU"
    assert canonical_op("Vector_Vector_Activate_Batch") == canonical_op("VVAU_hls") == "VVAU"
    assert canonical_op("ConvDoublePacked_Batch") == "ConvDoublePacked"
    assert canonical_op("StreamingDataWidthConverter_rtl") == "StreamingDataWidthConverter"
    for finn_name, op in FINN_OP_TYPES.items():
        assert op_class(finn_name).op == op


def test_unknown_op_names_node_and_allowed():
    with pytest.raises(InputError) as err:
        op_class("Conv2D_Batch", "MyNode_3")
    assert "MyNode_3" in str(err.value) and "Conv2D_Batch" in str(err.value)
    assert "StreamingFCLayer_Batch" in err.value.allowed and "MVAU_hls" in err.value.allowed
