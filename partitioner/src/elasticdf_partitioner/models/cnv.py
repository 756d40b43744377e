"""CNV w1a1 (BNN-PYNQ's CIFAR-10 network) as FINN builds it: a small, fast model for tests.

Input 32×32×3 UINT8 → Thresholding (input quantiser) → 6 × (SWG 3×3 + MVAU) with two StreamingMaxPool 2×2
(after conv 2 and conv 4) → 3 FC MVAUs → LabelSelect (top-1). Binary weights and activations except the 8-bit
first-layer input. Folding: finn-examples' cnv-w1a1 folding config (2021); max cycles 32768.
"""

from __future__ import annotations

from ..graph import ModelGraph
from ..ops import MVAU, ConvolutionInputGenerator, LabelSelect, StreamingMaxPool, Thresholding
from ._builder import GraphBuilder, load_folding, wwidth_cap

FOLDING_FILE = "cnv-w1a1-2021.json"
CONVS = ((3, 64, 32), (64, 64, 30), (64, 128, 14), (128, 128, 12), (128, 256, 5), (256, 256, 3))  # cin, cout, IFM
POOL_AFTER = {1, 3}
FCS = ((256, 512), (512, 512), (512, 10))


def build_cnv(apply_published: bool = True) -> ModelGraph:
    config = load_folding(FOLDING_FILE)
    simd = {k: v.get("SIMD", 1) for k, v in config.items() if k != "Defaults"}
    g = GraphBuilder("cnv")
    g.add(Thresholding("Thresholding_Batch_0", channels=3, n_vec=32 * 32, ibits=8, obits=8))
    for i, (cin, cout, ifm) in enumerate(CONVS):
        ibits = 8 if i == 0 else 1
        swg = ConvolutionInputGenerator(f"ConvolutionInputGenerator_{i}", channels=cin, ifm=ifm, kernel=3,
                                        ibits=ibits)
        g.add(swg)
        name = f"StreamingFCLayer_Batch_{i}"
        g.add(MVAU(name, MW=9 * cin, MH=cout, n_vec=swg.ofm ** 2, wbits=1, ibits=ibits, obits=1,
                   wwidth_max=wwidth_cap(1, simd.get(name, 1))))
        if i in POOL_AFTER:
            g.add(StreamingMaxPool(f"StreamingMaxPool_Batch_{sorted(POOL_AFTER).index(i)}",
                                   channels=cout, ifm=swg.ofm, pool=2, ibits=1))
    for j, (mw, mh) in enumerate(FCS):
        name = f"StreamingFCLayer_Batch_{len(CONVS) + j}"
        last = j == len(FCS) - 1
        layer = MVAU(name, MW=mw, MH=mh, n_vec=1, wbits=1, ibits=1, obits=1, activation=not last,
                     wwidth_max=wwidth_cap(1, simd.get(name, 1)))
        if last:
            layer.obits = layer.acc_bits()
        g.add(layer)
    g.add(LabelSelect("LabelSelect_Batch_0", labels=10, k=1, ibits=g.layers[g.last].obits))
    model = g.build(32 * 32 * 3 * 8, "CNV w1a1 (BNN-PYNQ CIFAR-10), finn-examples folding")
    if apply_published:
        model.apply_folding_config(config)
    return model
