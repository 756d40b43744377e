"""MVAU / ConvDoublePacked cost model against hand-computed FINN v0.6 values (reference §3)."""

import pytest
from elasticdf_partitioner.ops import MVAU, ConvDoublePacked
from elasticdf_partitioner.ops.base import FinnLayer
from hypothesis import given, settings
from hypothesis import strategies as st

LUT_BLOCK = {"resType": "lut", "mem_mode": "decoupled", "ram_style": "block"}


def rn50_3x3() -> MVAU:
    # ResNet-50 stage-1 3x3 conv: MW = 9*64 = 576, MH = 64, 56x56 outputs, W1 A2 -> B2
    return MVAU("fc", MW=576, MH=64, n_vec=56 * 56, wbits=1, ibits=2, obits=2, wwidth_max=64)


def test_mvau_cycles():
    # (MH/PE)·(MW/SIMD)·N_vec = (64/32)·(576/64)·3136 = 2·9·3136
    assert rn50_3x3().cycles({"PE": 32, "SIMD": 64}) == 56448


def test_mvau_lut_block_weights():
    # mult = Q·(2·ceil((W+A)/6) - 1)·(W+A) = 64·1·3 = 192; addertree = (W+A)(2Q-1) = 3·127 = 381
    # acc = W + A + ceil(log2 576) = 1+2+10 = 13; TMEM = 64/32 = 2 -> thr = (2^2-1)·13·ceil(2/64) = 39; comp = 39
    # LUT = int(300 + 1.1·32·(192+381+13+39+39)) = int(300 + 23372.8) = 23672
    # WMEM = 576·64/(32·64) = 18, mem_width = 64·1·32 = 2048 (> 18, WMEM <= 512) -> ceil(18/512)·ceil(2048/36) = 57
    r = rn50_3x3().resources({"PE": 32, "SIMD": 64}, LUT_BLOCK)
    assert (r.lut, r.bram18, r.uram, r.dsp) == (23672, 57, 0, 0)
    assert r.ff == r.lut  # documented FF estimate


def test_mvau_memory_variants():
    layer, f = rn50_3x3(), {"PE": 32, "SIMD": 64}
    # ultra: URAM = ceil(2048/72)·ceil(18/4096) = 29·1; no BRAM
    r = layer.resources(f, {"resType": "lut", "mem_mode": "decoupled", "ram_style": "ultra"})
    assert (r.lut, r.bram18, r.uram) == (23672, 0, 29)
    # distributed: c2 = P·Q·W·ceil(WMEM/64) = 32·64·1·1 = 2048 -> int(23672.8 + 2048) = 25720
    r = layer.resources(f, {"resType": "lut", "mem_mode": "decoupled", "ram_style": "distributed"})
    assert (r.lut, r.bram18, r.uram) == (25720, 0, 0)
    # const with WMEM = 18 <= 128: same LUTRAM cost, no BRAM
    r = layer.resources(f, {"resType": "lut", "mem_mode": "const", "ram_style": "auto"})
    assert (r.lut, r.bram18) == (25720, 0)
    # today's name of const
    assert layer.resources(f, {"resType": "lut", "mem_mode": "internal_embedded"}).lut == 25720


def test_mvau_dsp_variant():
    # DSP = P·Q·ceil((W+A)/48) = 32·64·1 = 2048; LUT loses mult: int(300 + 1.1·32·(381+13+39+39)) = 16914
    r = rn50_3x3().resources({"PE": 32, "SIMD": 64}, {"resType": "dsp", "mem_mode": "decoupled", "ram_style": "block"})
    assert (r.lut, r.dsp) == (16914, 2048)


def test_mvau_variants_offer_const_only_for_small_wmem():
    layer = rn50_3x3()
    small = {v["mem_mode"] for v in layer.variants({"PE": 32, "SIMD": 64})}  # WMEM 18
    large = {v["mem_mode"] for v in layer.variants({"PE": 1, "SIMD": 1})}  # WMEM 36864
    assert small == {"decoupled", "const"} and large == {"decoupled"}


def test_mvau_external_only_when_configured():
    fc = MVAU("fc52", MW=2048, MH=1000, wbits=8, ibits=8, obits=27, activation=False, wwidth_max=512,
              settings={"mem_mode": "external"})
    assert any(v["mem_mode"] == "external" for v in fc.variants({"PE": 1, "SIMD": 64}))
    r = fc.resources({"PE": 1, "SIMD": 64}, {"resType": "lut", "mem_mode": "external"})
    # no activation: mult = 64·(2·ceil(16/6)-1)·16 = 64·5·16 = 5120; addertree = 16·127 = 2032;
    # acc = 8+8+11 = 27 -> int(300 + 1.1·(5120+2032+27)) = int(8196.9) = 8196; weights off chip
    assert (r.lut, r.bram18, r.uram, r.dsp) == (8196, 0, 0, 0)
    assert not any(v["mem_mode"] == "external" for v in rn50_3x3().variants({"PE": 1, "SIMD": 1}))


def test_mvau_first_conv_mobilenet_dsp():
    # MobileNetV1 conv0: MW 27, MH 32, W8 A8 -> B4, PE 32, SIMD 3, resType dsp
    layer = MVAU("c0", MW=27, MH=32, n_vec=111 * 111, wbits=8, ibits=8, obits=4)
    r = layer.resources({"PE": 32, "SIMD": 3}, {"resType": "dsp", "mem_mode": "decoupled", "ram_style": "block"})
    # addertree = 16·5 = 80; acc = 16 + ceil(log2 27) = 21; thr = comp = 15·21·1 = 315
    # LUT = int(300 + 1.1·32·(80+21+315+315)) = int(26031.2); DSP = 32·3·ceil(16/48) = 96
    # WMEM = 27·32/96 = 9, width 3·8·32 = 768 -> ceil(9/512)·ceil(768/36) = 22
    assert (r.lut, r.bram18, r.dsp) == (26031, 22, 96)
    assert layer.cycles({"PE": 32, "SIMD": 3}) == 110889  # (32/32)·(27/3)·12321


def test_mvau_legal_foldings():
    layer = MVAU("x", MW=64, MH=48, wbits=4, ibits=4)  # default cap 36 bits -> SIMD <= 9
    foldings = layer.foldings()
    assert {f["SIMD"] for f in foldings} == {1, 2, 4, 8}
    assert {f["PE"] for f in foldings} == {1, 2, 3, 4, 6, 8, 12, 16, 24, 48}
    wide = MVAU("y", MW=64, MH=48, wbits=4, ibits=4, wwidth_max=64)
    assert {f["SIMD"] for f in wide.foldings()} == {1, 2, 4, 8, 16}


def test_mvau_out_stream():
    layer = rn50_3x3()
    assert layer.out_width({"PE": 32, "SIMD": 64}) == 64  # PE·B
    assert layer.out_bits_per_frame == 3136 * 64 * 2


def test_conv_double_packed():
    # ResNet-50 conv1: MW = 7·7·3 = 147, MH = 64, 112x112 outputs, W8 A8 -> B2, PE 64, SIMD 3, MMV 16
    layer = ConvDoublePacked("cdp", MW=147, MH=64, n_vec=112 * 112, wbits=8, ibits=8, obits=2, ofm_w=112)
    f = {"PE": 64, "SIMD": 3, "MMV": 16}
    assert layer.cycles(f) == 38416  # (64/64)·(147/3)·12544/16 = 49·784
    r = layer.resources(f, {})
    # DSP = P·MMV·Q/2 = 64·16·3/2 = 1536
    # LUT = int(300 + 1.1·64·(addertree 16·5=80 + acc 16+8=24 + thr 3·24=72 + comp 72)) = int(17759.2)
    # BRAM: WMEM = 147·64/(3·64) = 49, width 3·8·64 = 1536 -> ceil(49/512)·ceil(1536/36) = 43
    assert (r.lut, r.bram18, r.dsp) == (17759, 43, 1536)
    assert layer.out_width(f) == 64 * 16 * 2


@pytest.mark.parametrize("mw,mh", [(576, 64), (2048, 1000), (27, 32)])
def test_options_are_bounded_and_cached(mw, mh):
    layer = MVAU("z", MW=mw, MH=mh, n_vec=49, wbits=1, ibits=2, wwidth_max=64)
    options = layer.options()
    assert 0 < len(options) <= 400
    assert layer.options() is options
    twin = MVAU("twin", MW=mw, MH=mh, n_vec=49, wbits=1, ibits=2, wwidth_max=64)
    assert twin.options() is options  # same shape -> shared cache


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([3, 8, 27, 64, 144, 576, 1152, 4608]), st.sampled_from([2, 10, 32, 100, 256, 1000]),
       st.sampled_from([1, 49, 3136]), st.integers(1, 8), st.integers(1, 8), st.sampled_from([1, 2, 4, 32]),
       st.booleans(), st.sampled_from([36, 64, 128]), st.sampled_from([None, "external", "const", "decoupled"]))
def test_mvau_costs_all_foldings_at_once_as_one_at_a_time(mw, mh, n_vec, wbits, ibits, obits, activation,
                                                          wwidth_max, mem_mode):
    """The MVAU costs its candidates a variant at a time over every folding's PE and SIMD: the same rows,
    folding indices and Options (types included) as its formulas one candidate at a time."""
    layer = MVAU("m", MW=mw, MH=mh, n_vec=n_vec, wbits=wbits, ibits=ibits, obits=obits, activation=activation,
                 wwidth_max=wwidth_max, settings={"mem_mode": mem_mode} if mem_mode else {})
    table, groups, options = layer._candidate_costs()
    one_table, one_groups, one_options = FinnLayer._candidate_costs(layer)
    rows = list(range(len(one_table)))
    assert table.tolist() == one_table.tolist() and groups == one_groups
    made, expected = options(rows), one_options(rows)
    assert made == expected

    def types(option):
        return type(option.cycles), *map(type, option.res), type(option.out_width)

    assert [types(o) for o in made] == [types(o) for o in expected]
