"""VVAU and ConvolutionInputGenerator cost models against hand-computed FINN v0.6 values."""

from elasticdf_partitioner.ops import VVAU, ConvolutionInputGenerator


def test_vvau_mobilenet_dw0():
    layer = VVAU("dw", channels=32, kernel=3, ofm=111, wbits=4, ibits=4, obits=4)
    assert layer.cycles({"PE": 32}) == 110889  # (32·3·3/32)·111·111
    # WMEM = 9·32/32 = 9 <= 128 -> c2 = P·W·ceil(9/64) = 128, no BRAM
    # mult = (2·ceil(8/6)-1)·8 = 24; acc = 4+4+ceil(log2 9) = 12; thr = comp = 15·12·ceil(1/64) = 180
    # LUT = int(300 + 1.1·32·(24+12+180+180) + 128) = int(14367.2)
    r = layer.resources({"PE": 32}, {"resType": "lut"})
    assert (r.lut, r.bram18, r.dsp) == (14367, 0, 0)
    # dsp: DSP = 32·ceil(8/48) = 32; LUT = int(300 + 1.1·32·372 + 128) = int(13522.4)
    r = layer.resources({"PE": 32}, {"resType": "dsp"})
    assert (r.lut, r.dsp) == (13522, 32)


def test_vvau_bram_when_wmem_large():
    layer = VVAU("dw", channels=256, kernel=3, ofm=14, wbits=4, ibits=4, obits=4)
    # WMEM = 9·256/8 = 288 > 128, W = 4 -> ceil(288/4096)·ceil(4/4)·P = 8
    assert layer.resources({"PE": 8}, {"resType": "lut"}).bram18 == 8
    assert [f["PE"] for f in layer.foldings()] == [1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_swg_resnet_3x3():
    layer = ConvolutionInputGenerator("swg", channels=64, ifm=58, kernel=3, stride=1, ibits=2)
    assert layer.ofm == 56
    # IFM·K·(C/Q) + OFM·max(OFM·K·K·(C/Q), stride·IFM·(C/Q)) = 58·3 + 56·max(504, 58) = 174 + 28224
    assert layer.cycles({"SIMD": 64}) == 28398
    # distributed: 300 + (K+s)·Q·A·ceil(IFM·C/Q/64) = 300 + 4·64·2·ceil(58/64) = 812
    assert layer.resources({"SIMD": 64}, {"ram_style": "distributed"}).lut == 812
    # block: depth 58 -> width 36; BRAM = (K+s)·ceil(Q·A/36) = 4·ceil(128/36) = 16
    r = layer.resources({"SIMD": 64}, {"ram_style": "block"})
    assert (r.lut, r.bram18) == (300, 16)
    # ultra: (K+s)·ceil(Q·A/64)·ceil(58/4096) = 4·2·1 = 8
    assert layer.resources({"SIMD": 64}, {"ram_style": "ultra"}).uram == 8
    assert layer.out_width({"SIMD": 64}) == 128


def test_swg_strided_and_first_conv():
    layer = ConvolutionInputGenerator("swg", channels=128, ifm=58, kernel=3, stride=2, ibits=2)
    assert layer.ofm == 28
    # C/Q = 2: 58·3·2 + 28·max(28·9·2, 2·58·2) = 348 + 28·504
    assert layer.cycles({"SIMD": 64}) == 14460
    first = ConvolutionInputGenerator("swg0", channels=3, ifm=224, kernel=3, stride=2, ibits=8)
    # 224·3·1 + 111·max(111·9, 2·224) = 672 + 110889: the line-buffer fill makes it 0.6% slower than the MVAU
    assert first.cycles({"SIMD": 3}) == 111561


def test_depthwise_swg_keeps_every_folding():
    layer = ConvolutionInputGenerator("swg", channels=512, ifm=16, kernel=3, ibits=4, depthwise=True)
    simds = {dict(o.folding)["SIMD"] for o in layer.options()}
    assert simds == {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}
