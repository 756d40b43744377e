"""ResNet-50 w1a2 as FINN built it for the 2021 U250 release (finn-examples tag rn50-u250).

Structure (reference §6.2 and the node inventory of the 2021 folding config; node names match that config so
it applies unchanged):
- ConvDoublePacked_Batch_0: 7×7/2 conv 3→64 @112 with its own sliding window (8-bit weights and input).
- max pool 3×3/2: FMPadding_Batch_0 → ConvolutionInputGenerator_0 (depthwise, SIMD tied to Pool PE) → Pool_Batch_0.
- 16 bottleneck blocks (3/4/6/3), each DuplicateStreams → two branches → AddStreams → Thresholding:
  * first block of stages 2-4: a Thresholding requantises to 2 bits before the fork; the shortcut is
    DownSampler (stride 2) + 1×1 MVAU; the 3×3 conv is strided;
  * other blocks: the fork feeds a 4-bit identity Thresholding and a 2-bit Thresholding into the reduce MVAU;
  * stage 1 block 1 has a 1×1 shortcut MVAU without DownSampler.
  Each 3×3 conv is FMPadding + ConvolutionInputGenerator + MVAU. MVAUs carry their thresholds: reduce and
  3×3 output 2 bits, expand and shortcut output the 4-bit residual (AddStreams needs equal input types).
- Thresholding_Batch_34 → ChannelwiseOp_Batch_0 → Thresholding_Batch_35 before stage 4 (positions as in
  finn-examples' floorplan_resnet50.json); tail: ChannelwiseOp_Batch_1 → SWG (7×7 global) → Pool_Batch_1
  (average) → StreamingFCLayer_Batch_52 (2048→1000, 8-bit weights, mem_mode external) → ChannelwiseOp_Batch_2
  → LabelSelect_Batch_0 (top-5, UINT16 indices).
Datatype widths not stated in public sources are our assumptions, documented here: residual stream 4 bits,
AddStreams output 5 bits, ChannelwiseOp +1 bit, average-pool output and last-FC input 8 bits.
FIFOs and width converters are not modelled (the 2021 config sets every FIFO depth to 32).
"""

from __future__ import annotations

from ..graph import ModelGraph
from ..ops import (
    MVAU,
    AddStreams,
    ChannelwiseOp,
    ConvDoublePacked,
    ConvolutionInputGenerator,
    DownSampler,
    DuplicateStreams,
    FMPadding,
    LabelSelect,
    Pool,
    Thresholding,
)
from ._builder import GraphBuilder, load_folding, wwidth_cap

FOLDING_FILE = "resnet50-U250-2021.json"
STAGES = ((3, 64, 256, 56), (4, 128, 512, 28), (6, 256, 1024, 14), (3, 512, 2048, 7))  # blocks, mid, out, OFM
ACT, RES = 2, 4  # activation and residual bits


class _Names:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def __call__(self, prefix: str) -> str:
        n = self.count.get(prefix, 0)
        self.count[prefix] = n + 1
        return f"{prefix}_{n}"


def build_resnet50(apply_published: bool = True) -> ModelGraph:
    config = load_folding(FOLDING_FILE)
    simd = {k: v.get("SIMD", 1) for k, v in config.items() if k != "Defaults"}
    g = GraphBuilder("resnet50")
    name = _Names()
    name.count["StreamingFCLayer_Batch"] = 0
    fc_order = iter([1, 0])  # stage-1 block-1 lists its shortcut (FC_1) before its reduce (FC_0)

    def fc(mw: int, mh: int, ofm: int, obits: int, inputs: list[int] | None = None, index: int | None = None,
           wbits: int = 1, ibits: int = ACT, activation: bool = True) -> int:
        nm = f"StreamingFCLayer_Batch_{index}" if index is not None else name("StreamingFCLayer_Batch")
        return g.add(MVAU(nm, MW=mw, MH=mh, n_vec=ofm * ofm, wbits=wbits, ibits=ibits, obits=obits,
                          activation=activation, wwidth_max=wwidth_cap(wbits, simd.get(nm, 1))), inputs)

    def conv3x3(cin: int, cout: int, ifm: int, stride: int, index: int | None = None) -> int:
        g.add(FMPadding(name("FMPadding_Batch"), channels=cin, ifm=ifm, ibits=ACT, padding=2))
        swg = ConvolutionInputGenerator(name("ConvolutionInputGenerator"), channels=cin, ifm=ifm + 2, kernel=3,
                                        stride=stride, ibits=ACT)
        g.add(swg)
        return fc(9 * cin, cout, swg.ofm, ACT, index=index)

    # stem: double-packed 7x7/2 conv, 3x3/2 max pool
    g.add(ConvDoublePacked("ConvDoublePacked_Batch_0", MW=147, MH=64, n_vec=112 * 112, wbits=8, ibits=8, obits=ACT,
                           ofm_w=112, kernel=7, stride=2, padding=3, ifm=224, wwidth_max=wwidth_cap(8, 3)), [])
    g.add(FMPadding(name("FMPadding_Batch"), channels=64, ifm=112, ibits=ACT, padding=2))
    swg = g.add(ConvolutionInputGenerator(name("ConvolutionInputGenerator"), channels=64, ifm=114, kernel=3,
                                          stride=2, ibits=ACT, depthwise=True))
    pool = g.add(Pool(name("Pool_Batch"), channels=64, kernel=3, ofm=56, ibits=ACT, function="MaxPool"))
    g.tie(swg, pool)

    cin, ifm = 64, 56
    for stage, (blocks, mid, cout, ofm) in enumerate(STAGES):
        for block in range(blocks):
            first = block == 0
            if first and stage > 0:
                if stage == 3:  # before stage 4 a ChannelwiseOp sits between the two thresholds
                    g.add(ChannelwiseOp("ChannelwiseOp_Batch_0", channels=cin, n_vec=ifm * ifm, ibits=RES,
                                        obits=RES + 1))
                    g.add(Thresholding(name("Thresholding_Batch"), channels=cin, n_vec=ifm * ifm, ibits=RES + 1,
                                       obits=ACT))
                else:
                    g.add(Thresholding(name("Thresholding_Batch"), channels=cin, n_vec=ifm * ifm, ibits=RES,
                                       obits=ACT))
            fork_bits = ACT if first else RES
            dup = g.add(DuplicateStreams(name("DuplicateStreams_Batch"), channels=cin, n_vec=ifm * ifm,
                                         ibits=fork_bits))
            if first:
                if stage > 0:
                    g.add(DownSampler(name("DownSampler"), channels=cin, ifm=ifm, ibits=ACT, stride=2), [dup])
                    shortcut = fc(cin, cout, ofm, RES)
                    reduce_ = fc(cin, mid, ifm, ACT, [dup])
                else:
                    shortcut = fc(cin, cout, ofm, RES, [dup], index=next(fc_order))
                    reduce_ = fc(cin, mid, ifm, ACT, [dup], index=next(fc_order))
                    name.count["StreamingFCLayer_Batch"] = 2
            else:
                shortcut = g.add(Thresholding(name("Thresholding_Batch"), channels=cin, n_vec=ifm * ifm, ibits=RES,
                                              obits=RES), [dup])
                g.add(Thresholding(name("Thresholding_Batch"), channels=cin, n_vec=ifm * ifm, ibits=RES, obits=ACT),
                      [dup])
                reduce_ = fc(cin, mid, ifm, ACT)
            assert reduce_ == g.last
            conv3x3(mid, mid, ifm, 2 if (first and stage > 0) else 1)
            expand = fc(mid, cout, ofm, RES)
            g.add(AddStreams(name("AddStreams_Batch"), channels=cout, n_vec=ofm * ofm, ibits=RES),
                  [shortcut, expand])
            g.add(Thresholding(name("Thresholding_Batch"), channels=cout, n_vec=ofm * ofm, ibits=RES + 1,
                               obits=RES))
            cin, ifm = cout, ofm

    # tail: global average pool, FC with external weights, bias, top-5
    g.add(ChannelwiseOp("ChannelwiseOp_Batch_1", channels=2048, n_vec=49, ibits=RES, obits=RES + 1))
    swg = g.add(ConvolutionInputGenerator(name("ConvolutionInputGenerator"), channels=2048, ifm=7, kernel=7,
                                          stride=1, ibits=RES + 1, depthwise=True))
    pool = g.add(Pool(name("Pool_Batch"), channels=2048, kernel=7, ofm=1, ibits=RES + 1, obits=8,
                      function="QuantAvgPool"))
    g.tie(swg, pool)
    last_fc = fc(2048, 1000, 1, 0, wbits=8, ibits=8, activation=False)
    acc = g.layers[last_fc].acc_bits()
    g.layers[last_fc].obits = acc
    g.add(ChannelwiseOp("ChannelwiseOp_Batch_2", channels=1000, n_vec=1, ibits=acc, obits=acc))
    g.add(LabelSelect("LabelSelect_Batch_0", labels=1000, k=5, ibits=acc, obits=16))

    model = g.build(224 * 224 * 3 * 8, "ResNet-50 w1a2, FINN 2021 U250 build (double-packed first conv)")
    if apply_published:
        model.apply_folding_config(config)
    return model
