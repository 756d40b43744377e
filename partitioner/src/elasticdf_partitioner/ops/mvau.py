"""MVAU (FINN `StreamingFCLayer_Batch` v0.6, `MVAU_hls`/`MVAU_rtl` today): matrix-vector unit of FC layers and
lowered convolutions, optionally with embedded thresholds; and the double-packed first convolution of
finn-experimental (`ConvDoublePacked_Batch`).

Notation (reference §3.2): P = PE, Q = SIMD, W/A/B = weight/input/output bits, MW = K·K·C_in, MH = C_out,
N_vec = output pixels. WMEM = MW·MH/(P·Q), TMEM = MH/P.

Folding legality: MW % SIMD == 0, MH % PE == 0, and the weight-stream width W·SIMD <= `wwidth_max`
(SetFolding's mvau_wwidth_max, default 36). Model builders raise the cap per layer to the published folding
(ResNet-50 streams 64 one-bit weights per cycle, MobileNetV1 16 four-bit ones), so the published folding is
always legal.

Variants: resType lut|dsp × weight memory: decoupled with ram_style block|ultra|distributed, const/embedded
(offered only when WMEM <= 128, as SetMemMode chooses), or external (offered only to a layer that was given
mem_mode=external, e.g. ResNet-50's final FC, whose weights stream from DDR).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..finn_node import DataType, FinnNode
from ..options import Option
from ..resources import Resources
from .base import (
    SETTINGS_ATTRS,
    FinnLayer,
    FinnNodeSpec,
    Tensor,
    bram18_width_depth,
    ceil_div,
    clog2,
    default_vectors,
    divisors,
    draw,
    input_type,
    res,
    spread_thresholds,
    uniform_moments,
    where,
)

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering

DEFAULT_WWIDTH_MAX = 36

# FINN v0.6 and today's names of the memory modes
MEM_MODES = {"const": "const", "internal_embedded": "const", "decoupled": "decoupled",
             "internal_decoupled": "decoupled", "external": "external"}


# The weight memories a folding may offer, in the order of its variants: decoupled in each RAM style, const
# (embedded; see MVAU.offers), external
MEMORIES = (("decoupled", "block"), ("decoupled", "ultra"), ("decoupled", "distributed"), ("const", "auto"),
            ("external", "auto"))


def _mvau_bram(mw: int, mh: int, p: int, q: int, w: int, mem_mode: str, ram_style: str) -> int:
    """The MVAU's and _mvau_uram's formulas take numbers or numpy arrays of P and Q (MVAU._candidate_costs)."""
    wmem = mw * mh / (p * q)
    if mem_mode == "external" or (mem_mode == "decoupled" and ram_style in ("distributed", "ultra")):
        return 0
    blocks = bram18_width_depth(wmem, q * w * p)
    return where(wmem <= 128, 0, blocks) if mem_mode == "const" else blocks


def _mvau_uram(mw: int, mh: int, p: int, q: int, w: int, mem_mode: str, ram_style: str) -> int:
    if mem_mode != "decoupled" or ram_style != "ultra":
        return 0
    return ceil_div(q * w * p, 72) * ceil_div(mw * mh / (p * q), 4096)


@dataclass(eq=False)
class MVAU(FinnLayer):
    """One MVAU. `obits` is the output width: B with thresholds (`activation`), the accumulator type without."""

    name: str
    MW: int
    MH: int
    n_vec: int = 1
    wbits: int = 1
    ibits: int = 2
    obits: int = 2
    activation: bool = True
    wwidth_max: int = DEFAULT_WWIDTH_MAX
    settings: dict = field(default_factory=dict)
    vectors: tuple[int, ...] = ()  # FINN numInputVectors; () derives it from n_vec (default_vectors)

    op: ClassVar[str] = "MVAU"
    finn_op_types: ClassVar[tuple[str, ...]] = (
        "StreamingFCLayer_Batch", "MatrixVectorActivation", "MVAU", "MVAU_rtl", "MVAU_hls")
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE", "SIMD")
    variant_attrs: ClassVar[tuple[str, ...]] = ("resType", "mem_mode", "ram_style")
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {
        "resType": ("lut", "dsp", "auto"),
        "mem_mode": tuple(MEM_MODES),
        "ram_style": ("block", "distributed", "ultra", "auto"),
    }
    cost_settings: ClassVar[tuple[str, ...]] = ("mem_mode",)

    def __post_init__(self) -> None:
        self.vectors = tuple(self.vectors) or default_vectors(self.n_vec)

    def wmem(self, folding: dict[str, int]) -> float:
        return self.MW * self.MH / (folding["PE"] * folding["SIMD"])

    def foldings(self) -> list[dict[str, int]]:
        simds = [q for q in divisors(self.MW) if q == 1 or self.wbits * q <= self.wwidth_max]
        return [{"PE": p, "SIMD": q} for p in divisors(self.MH) for q in simds]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        wmem = self.wmem(folding)
        return [variant for variant in self.every_variant() if self.offers(variant, wmem)]

    def every_variant(self) -> list[dict[str, str]]:
        """The variants of all foldings, in the order variants() lists a folding's."""
        return [{"resType": r, "mem_mode": m, "ram_style": s} for r in ("lut", "dsp") for m, s in MEMORIES]

    def offers(self, variant: dict[str, str], wmem: float) -> bool:
        """Whether a folding of `wmem` weight words offers the variant (elementwise over an array of them):
        const memory only for WMEM <= 128, as SetMemMode chooses; external only to a layer given it."""
        if variant["mem_mode"] == "const":
            return wmem <= 128
        if variant["mem_mode"] == "external":
            return MEM_MODES.get(str(self.settings.get("mem_mode"))) == "external"
        return True

    def cycles(self, folding: dict[str, int]) -> int:
        # (MH/P)·(MW/Q)·N_vec
        return (self.MH // folding["PE"]) * (self.MW // folding["SIMD"]) * self.n_vec

    def acc_bits(self) -> int:
        return self.wbits + self.ibits + clog2(self.MW)

    def lut(self, p: int, q: int, res_type: str, mem_mode: str, ram_style: str) -> float:
        """FINN's LUT estimate before its int() (res() truncates); elementwise over numpy arrays of P and Q."""
        w, a = self.wbits, self.ibits
        wmem = self.MW * self.MH / (p * q)
        c2 = 0  # weights in LUTRAM
        if mem_mode == "decoupled" and ram_style == "distributed":
            c2 = p * q * w * ceil_div(wmem, 64)
        elif mem_mode == "const":
            c2 = where(wmem <= 128, p * q * w * ceil_div(wmem, 64), 0)
        mult = 0 if res_type == "dsp" else q * (2 * ceil_div(w + a, 6) - 1) * (w + a)
        addertree = (w + a) * (2 * q - 1)
        acc = self.acc_bits()
        thr = comp = 0
        if self.activation:
            levels = 2 ** self.obits - 1
            thr = levels * acc * ceil_div(self.MH / p, 64)
            comp = levels * acc
        return 300 + 1.1 * p * (mult + addertree + acc + thr + comp) + c2

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        return res(*self._costs(folding["PE"], folding["SIMD"], variant))

    def _costs(self, p: int, q: int, variant: dict[str, str]) -> tuple[float, float, float, float]:
        """LUT (before truncation), BRAM18, URAM and DSP of a variant; elementwise over numpy arrays of P and Q."""
        res_type = "dsp" if variant.get("resType") == "dsp" else "lut"
        mem_mode = MEM_MODES.get(str(variant.get("mem_mode", "decoupled")), "decoupled")
        ram_style = str(variant.get("ram_style", "block"))
        dsp = p * q * ceil_div(self.wbits + self.ibits, 48) if res_type == "dsp" else 0
        return (self.lut(p, q, res_type, mem_mode, ram_style),
                _mvau_bram(self.MW, self.MH, p, q, self.wbits, mem_mode, ram_style),
                _mvau_uram(self.MW, self.MH, p, q, self.wbits, mem_mode, ram_style), dsp)

    def _candidate_costs(self) -> tuple[np.ndarray, list[int], Callable[[list[int]], list[Option]]]:
        """FinnLayer._candidate_costs, the same costs and order (a variant's formulas are the scalar ones, over
        arrays of every folding's P and Q), a variant at a time: a ResNet-50 has ~10^4 MVAU candidates, which one
        at a time cost most of its first plan."""
        import numpy as np

        foldings, variants = self.foldings(), self.every_variant()
        p = np.array([f["PE"] for f in foldings])
        q = np.array([f["SIMD"] for f in foldings])
        wmem = self.wmem({"PE": p, "SIMD": q})
        costs = np.empty((len(foldings), len(variants), 7))  # folding x variant x (cycles, resources, width)
        offered = np.empty((len(foldings), len(variants)), dtype=bool)
        costs[:, :, 0] = self.cycles({"PE": p, "SIMD": q})[:, None]
        costs[:, :, 6] = self.out_width({"PE": p, "SIMD": q})[:, None]
        for j, variant in enumerate(variants):
            lut, bram18, uram, dsp = self._costs(p, q, variant)
            costs[:, j, 1] = costs[:, j, 2] = np.trunc(lut)  # res(): int(lut), and FF = LUT (ff_from_lut)
            costs[:, j, 3], costs[:, j, 4], costs[:, j, 5] = bram18, uram, dsp
            offered[:, j] = self.offers(variant, wmem)
        rows = np.flatnonzero(offered)  # folding by folding, each one's variants in order
        table = costs.reshape(-1, 7)[rows]

        def options(kept: list[int]) -> list[Option]:
            variant_attributes = [Option.attributes(v) for v in variants]
            folding_attributes: dict[int, tuple] = {}  # the kept options of a folding share its attributes
            made = []
            for row, (cycles, lut, ff, bram18, uram, dsp, width) in zip(
                    rows[kept].tolist(), table[kept].astype(np.int64).tolist()):  # whole numbers: exact
                folding, variant = divmod(row, len(variants))
                if folding not in folding_attributes:
                    folding_attributes[folding] = Option.attributes(foldings[folding])
                made.append(Option(folding_attributes[folding], variant_attributes[variant], cycles,
                                   Resources(lut, ff, bram18, uram, dsp), width))
            return made

        return table, (rows // len(variants)).tolist(), options

    def in_width(self, folding: dict[str, int]) -> int:
        return folding["SIMD"] * self.ibits

    def out_width(self, folding: dict[str, int]) -> int:
        return folding["PE"] * self.obits

    @property
    def out_bits_per_frame(self) -> int:
        return self.n_vec * self.MH * self.obits

    def describe(self) -> str:
        return f"{self.MW}x{self.MH} x{self.n_vec} W{self.wbits}A{self.ibits}->{self.obits}"

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> MVAU:
        w = node.bits("weightDataType")
        return cls(node.name, MW=node.int("MW"), MH=node.int("MH"), n_vec=node.n_vec(), vectors=node.vectors(),
                   wbits=w, ibits=node.bits("inputDataType"), obits=node.bits("outputDataType"),
                   activation=node.int("noActivation", 0) == 0,
                   wwidth_max=max(DEFAULT_WWIDTH_MAX, w * node.int("SIMD", 1)), settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((*self.vectors, self.MW), DataType.of(self.ibits))

    def _weights(self, rng: np.random.Generator, idt: DataType) -> tuple[DataType, bool, np.ndarray]:
        """Weight datatype, binaryXnorMode and weights. One-bit weights on one-bit unsigned inputs use FINN's
        xnor-popcount form (both BINARY, binaryXnorMode=1), as FINN builds binarised networks such as CNV."""
        xnor = self.wbits == 1 and idt.bits == 1 and not idt.signed
        wdt = DataType.parse("BINARY") if xnor else DataType.of(self.wbits, signed=True)
        return wdt, xnor, draw(rng, wdt, (self.MW, self.MH))

    def _thresholds(self, rng: np.random.Generator, idt: DataType, weights: np.ndarray, popcount: bool
                    ) -> np.ndarray:
        """Thresholds over mean ± 2 standard deviations of each channel's accumulator for uniform inputs."""
        import numpy as np

        if popcount:  # number of agreeing signs: MW/2 ± sqrt(MW)/2
            mean, sd = np.full(self.MH, self.MW / 2), np.full(self.MH, np.sqrt(self.MW) / 2)
        else:
            x_mean, x_var = uniform_moments(idt)
            mean = x_mean * weights.sum(axis=0, dtype=np.float64)
            sd = np.sqrt(x_var * np.square(weights, dtype=np.float64).sum(axis=0))
        return spread_thresholds(rng, mean - 2 * sd, mean + 2 * sd, self.MH, 2 ** self.obits - 1)

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        idt = input_type(inputs[0], self.ibits)
        wdt, xnor, weights = self._weights(rng, idt)
        odt = DataType.of(self.obits, signed=not self.activation)
        params = [weights]
        if self.activation:
            params.append(self._thresholds(rng, idt, weights, xnor or (idt.bipolar and wdt.bipolar)))
        attrs = self.finn_attrs(MW=self.MW, MH=self.MH, inputDataType=idt.name, weightDataType=wdt.name,
                                outputDataType=odt.name, noActivation=int(not self.activation), ActVal=0,
                                binaryXnorMode=int(xnor), numInputVectors=list(self.vectors))
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((*self.vectors, self.MH), odt)], params)

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        mw, mh = node.int("MW"), node.int("MH")
        x = ctx.reshape(inputs[0], (*node.vectors(), mw))  # FINN reads its input in its normal shape
        return [matrix_vector(node, ctx, x, node.param(1).reshape(mw, mh))]


def matrix_vector(node: FinnNode, ctx: Lowering, x: str, weights: np.ndarray) -> str:
    """FINN's MVAU arithmetic on x (..., MW) with weights (MW, MH): a matrix product, in binaryXnorMode (or
    with BIPOLAR inputs and weights) the xnor-popcount (number of agreeing signs), then the optional
    MultiThreshold with ActVal (BIPOLAR output: 2·count - 1). Shared with ConvDoublePacked."""
    import numpy as np

    from ..lowering import exact_type, multithreshold

    idt, wdt = node.dtype("inputDataType"), node.dtype("weightDataType")
    binary = node.int("binaryXnorMode", 0) == 1
    popcount = binary or (idt.bipolar and wdt.bipolar)
    weights = np.asarray(weights, dtype=np.float64)
    if binary:  # {0, 1} encodes {-1, +1}
        weights = 2 * weights - 1
    x_max = 1 if popcount else max(abs(idt.min), abs(idt.max))
    bound = weights.shape[0] * float(np.abs(weights).max(initial=0)) * x_max
    elem = exact_type(bound)
    x = ctx.cast(x, elem)
    if binary:
        x = ctx.affine(x, 2, -1)
    acc = ctx.op("MatMul", [x, ctx.const(weights, "weights", elem)])
    if popcount:  # agreements = (sum of sign products + MW) / 2
        acc = ctx.affine(acc, 0.5, weights.shape[0] / 2)
    odt = node.dtype("outputDataType")
    if node.int("noActivation", 0) == 1:
        return ctx.cast(acc, exact_type(odt.min, odt.max)) if odt.integer else acc
    bipolar_out = odt.bipolar
    value_range = (0, weights.shape[0]) if popcount else (-int(bound), int(bound)) if idt.integer else None
    return multithreshold(ctx, acc, node.param(2), scale=2 if bipolar_out else 1,
                          bias=-1 if bipolar_out else int(node.get("ActVal", 0)), value_range=value_range)


@dataclass(eq=False)
class ConvDoublePacked(MVAU):
    """finn-experimental's first-layer convolution packing two MACs per DSP (sliding window included).

    FINN gives no cycle count for it; we use the MVAU count divided by MMV (MMV output pixels in parallel):
    (MH/P)·(MW/Q)·N_vec/MMV. DSP = P·MMV·Q/2; LUT = 300 + 1.1·P·(addertree + acc + thr + comp) (no
    multiplier LUTs); BRAM18 as the MVAU's block-RAM rule (no memory-mode choice). MMV ranges over the divisors
    of the output width `ofm_w`; the output stream carries MMV pixels of PE channels.

    The sliding window is built in: the input is the (1, IFM, IFM, C) image, zero-padded by `padding` on each
    side, convolved with a kernel×kernel window at `stride`; MW = kernel²·C in (kh, kw, c) order as MVAU.
    """

    ofm_w: int = 1
    kernel: int = 1
    stride: int = 1
    padding: int = 0  # on each side
    ifm: int = 0  # 0: ofm_w (a 1x1 convolution)

    op: ClassVar[str] = "ConvDoublePacked"
    finn_op_types: ClassVar[tuple[str, ...]] = ("ConvDoublePacked_Batch",)
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE", "SIMD", "MMV")
    variant_attrs: ClassVar[tuple[str, ...]] = ()
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {}
    cost_settings: ClassVar[tuple[str, ...]] = ()
    # its foldings (with MMV) and costs are its own, and few: costed one candidate at a time
    _candidate_costs = FinnLayer._candidate_costs

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ifm = self.ifm or self.ofm_w

    @property
    def channels(self) -> int:
        return self.MW // (self.kernel * self.kernel)

    def foldings(self) -> list[dict[str, int]]:
        mmvs = [m for m in divisors(self.ofm_w) if m <= 32]
        return [{**f, "MMV": m} for f in super().foldings() for m in mmvs]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{}]

    def cycles(self, folding: dict[str, int]) -> int:
        return super().cycles(folding) // folding["MMV"]

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        p, q, mmv = folding["PE"], folding["SIMD"], folding["MMV"]
        lut = self.lut(p, q, "dsp", "decoupled", "block")  # no multiplier LUTs, no LUTRAM term
        return res(
            lut=lut,
            bram18=bram18_width_depth(self.MW * self.MH / (p * q), q * self.wbits * p),
            dsp=ceil_div(p * mmv * q, 2),
        )

    def out_width(self, folding: dict[str, int]) -> int:
        return folding["PE"] * folding.get("MMV", 1) * self.obits

    @classmethod
    def from_finn(cls, node: FinnNode) -> ConvDoublePacked:
        w = node.bits("weightDataType")
        ofm = node.int("OFMDim", 0) or math.isqrt(node.n_vec())
        vectors = node.vectors() if "numInputVectors" in node.attrs else (1, ofm, ofm)
        return cls(node.name, MW=node.int("MW"), MH=node.int("MH"), n_vec=math.prod(vectors), vectors=vectors,
                   wbits=w, ibits=node.bits("inputDataType"), obits=node.bits("outputDataType"),
                   activation=node.int("noActivation", 0) == 0, ofm_w=ofm, kernel=node.int("ConvKernelDim", 1),
                   stride=node.int("Stride", 1), padding=node.int("Padding", 0), ifm=node.int("IFMDim", 0),
                   wwidth_max=max(DEFAULT_WWIDTH_MAX, w * node.int("SIMD", 1)), settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((1, self.ifm, self.ifm, self.channels), DataType.of(self.ibits))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        spec = super().to_finn(rng, inputs)
        for attr in ("binaryXnorMode", "ActVal"):
            del spec.attrs[attr]
        spec.attrs.update(ConvKernelDim=self.kernel, IFMChannels=self.channels, IFMDim=self.ifm, OFMChannels=self.MH,
                          OFMDim=self.ofm_w, Stride=self.stride, Padding=self.padding)
        return spec

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        from .resample import pad_image
        from .swg import sliding_windows

        k, ifm, pad = node.int("ConvKernelDim"), node.int("IFMDim"), node.int("Padding", 0)
        x = ctx.reshape(inputs[0], (1, ifm, ifm, node.int("IFMChannels")))
        x = pad_image(ctx, x, (pad, pad, pad, pad))
        x = sliding_windows(ctx, x, k, node.int("Stride", 1), 1, node.int("OFMDim"))
        return [matrix_vector(node, ctx, x, node.param(1).reshape(node.int("MW"), node.int("MH")))]
