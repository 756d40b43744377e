"""MobileNetV1 w4a4 as FINN built it for Alveo in 2021 (finn-examples tag rn50-u250, U250 folding config;
the U50/U200/U280 configs are identical).

Structure (reference §6.1): init conv 3×3/2 without padding (SWG + MVAU, 8-bit weights and input, DSP
multipliers), 13 depthwise-separable blocks (FMPadding → depthwise SWG (SIMD tied to the VVAU's PE) → VVAU →
pointwise MVAU), global average pool (SWG 7×7 + Pool, tied), FC 1024→1000 without activation,
ChannelwiseOp (bias), LabelSelect top-5. All MVAU/VVAU embed their 4-bit thresholds. The StreamingFIFO and
StreamingDataWidthConverter nodes of the config are inserted exactly where the config lists them, sized
from their neighbours at the published folding. Assumptions: average-pool output 4 bits, FC output = its
accumulator width.
"""

from __future__ import annotations

from ..graph import ModelGraph
from ..ops import (
    MVAU,
    VVAU,
    ChannelwiseOp,
    ConvolutionInputGenerator,
    FinnLayer,
    FMPadding,
    LabelSelect,
    Pool,
    StreamingDataWidthConverter,
    StreamingFIFO,
)
from ._builder import GraphBuilder, load_folding, wwidth_cap

FOLDING_FILE = "mobilenetv1-U250-2021.json"
BITS = 4
INPUT_BITS = 224 * 224 * 3 * 8
# (depthwise channels, depthwise stride, pointwise output channels) for the 13 blocks
BLOCKS = ((32, 1, 64), (64, 2, 128), (128, 1, 128), (128, 2, 256), (256, 1, 256), (256, 2, 512),
          (512, 1, 512), (512, 1, 512), (512, 1, 512), (512, 1, 512), (512, 1, 512), (512, 2, 1024),
          (1024, 1, 1024))


def _core_layers(config: dict) -> list[FinnLayer]:
    """The compute layers in order, named as FINN named them."""
    simd = {k: v.get("SIMD", 1) for k, v in config.items() if k != "Defaults"}
    layers: list[FinnLayer] = []

    def mvau(i: int, mw: int, mh: int, ofm: int, wbits: int = BITS, ibits: int = BITS, activation: bool = True):
        nm = f"StreamingFCLayer_Batch_{i}"
        layer = MVAU(nm, MW=mw, MH=mh, n_vec=ofm * ofm, wbits=wbits, ibits=ibits, obits=BITS,
                     activation=activation, wwidth_max=wwidth_cap(wbits, simd.get(nm, 1)))
        if not activation:
            layer.obits = layer.acc_bits()
        layers.append(layer)

    layers.append(ConvolutionInputGenerator("ConvolutionInputGenerator_0", channels=3, ifm=224, kernel=3, stride=2,
                                            ibits=8))
    mvau(0, 27, 32, 111, wbits=8, ibits=8)
    res = 111
    for i, (ch, stride, out) in enumerate(BLOCKS):
        layers.append(FMPadding(f"FMPadding_Batch_{i}", channels=ch, ifm=res, ibits=BITS, padding=2))
        swg = ConvolutionInputGenerator(f"ConvolutionInputGenerator_{i + 1}", channels=ch, ifm=res + 2, kernel=3,
                                        stride=stride, ibits=BITS, depthwise=True)
        layers.append(swg)
        res = swg.ofm
        layers.append(VVAU(f"Vector_Vector_Activate_Batch_{i}", channels=ch, kernel=3, ofm=res, wbits=BITS,
                           ibits=BITS, obits=BITS))
        mvau(i + 1, ch, out, res)
    layers.append(ConvolutionInputGenerator("ConvolutionInputGenerator_14", channels=1024, ifm=7, kernel=7, stride=1,
                                            ibits=BITS, depthwise=True))
    layers.append(Pool("Pool_Batch_0", channels=1024, kernel=7, ofm=1, ibits=BITS, obits=BITS,
                       function="QuantAvgPool"))
    mvau(14, 1024, 1000, 1, activation=False)
    acc = layers[-1].obits
    layers.append(ChannelwiseOp("ChannelwiseOp_Batch_0", channels=1000, n_vec=1, ibits=acc, obits=acc))
    layers.append(LabelSelect("LabelSelect_Batch_0", labels=1000, k=5, ibits=acc))
    return layers


def build_mobilenetv1(apply_published: bool = True) -> ModelGraph:
    config = load_folding(FOLDING_FILE)
    core = {layer.name: layer for layer in _core_layers(config)}
    for name, layer in core.items():
        layer.settings.update(config.get(name, {}))
    order = [k for k in config if k != "Defaults"]
    missing = [n for n in core if n not in order]
    # nodes the config does not list keep their place after their predecessor in `core` order
    for n in missing:
        before = list(core)[list(core).index(n) - 1]
        order.insert(order.index(before) + 1, n)

    g = GraphBuilder("mobilenetv1")
    for pos, name in enumerate(order):
        if name in core:
            index = g.add(core[name])
            layer = core[name]
            if layer.op in ("VVAU", "Pool"):
                swg = max(i for i in range(index) if g.layers[i].op == "ConvolutionInputGenerator")
                g.tie(swg, index)
            continue
        nxt = next(core[n] for n in order[pos + 1:] if n in core)
        if g.layers:
            prev = g.layers[g.last]
            width, bits = prev.out_width(prev.published_folding()), prev.out_bits_per_frame
        else:  # the input FIFO
            width, bits = nxt.in_width(nxt.published_folding()), INPUT_BITS
        if name.startswith("StreamingFIFO"):
            g.add(StreamingFIFO(name, width=width, depth=int(config[name]["depth"]), bits_per_frame=bits,
                                settings=dict(config[name])))
        elif name.startswith("StreamingDataWidthConverter"):
            g.add(StreamingDataWidthConverter(name, in_width_bits=width, out_bits=nxt.in_width(nxt.published_folding()),
                                              bits_per_frame=bits, settings=dict(config[name])))
        else:
            raise AssertionError(f"unexpected node {name} in {FOLDING_FILE}")

    model = g.build(INPUT_BITS, "MobileNetV1 w4a4, FINN 2021 Alveo build")
    if apply_published:
        model.apply_folding_config(config)
    return model
