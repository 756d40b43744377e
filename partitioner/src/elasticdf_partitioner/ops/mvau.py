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

from dataclasses import dataclass, field
from typing import ClassVar

from .base import FinnLayer, bram18_width_depth, ceil_div, clog2, divisors, res

DEFAULT_WWIDTH_MAX = 36

# FINN v0.6 and today's names of the memory modes
MEM_MODES = {"const": "const", "internal_embedded": "const", "decoupled": "decoupled",
             "internal_decoupled": "decoupled", "external": "external"}


def _mvau_bram(mw: int, mh: int, p: int, q: int, w: int, mem_mode: str, ram_style: str) -> int:
    wmem = mw * mh / (p * q)
    if mem_mode == "external" or (mem_mode == "decoupled" and ram_style in ("distributed", "ultra")) or (
            mem_mode == "const" and wmem <= 128):
        return 0
    return bram18_width_depth(wmem, q * w * p)


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

    op: ClassVar[str] = "MVAU"
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE", "SIMD")
    variant_attrs: ClassVar[tuple[str, ...]] = ("resType", "mem_mode", "ram_style")
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {
        "resType": ("lut", "dsp", "auto"),
        "mem_mode": tuple(MEM_MODES),
        "ram_style": ("block", "distributed", "ultra", "auto"),
    }
    cost_settings: ClassVar[tuple[str, ...]] = ("mem_mode",)

    def wmem(self, folding: dict[str, int]) -> float:
        return self.MW * self.MH / (folding["PE"] * folding["SIMD"])

    def foldings(self) -> list[dict[str, int]]:
        simds = [q for q in divisors(self.MW) if q == 1 or self.wbits * q <= self.wwidth_max]
        return [{"PE": p, "SIMD": q} for p in divisors(self.MH) for q in simds]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        memories = [("decoupled", "block"), ("decoupled", "ultra"), ("decoupled", "distributed")]
        if self.wmem(folding) <= 128:
            memories.append(("const", "auto"))
        if MEM_MODES.get(str(self.settings.get("mem_mode"))) == "external":
            memories.append(("external", "auto"))
        return [{"resType": r, "mem_mode": m, "ram_style": s} for r in ("lut", "dsp") for m, s in memories]

    def cycles(self, folding: dict[str, int]) -> int:
        # (MH/P)·(MW/Q)·N_vec
        return (self.MH // folding["PE"]) * (self.MW // folding["SIMD"]) * self.n_vec

    def acc_bits(self) -> int:
        return self.wbits + self.ibits + clog2(self.MW)

    def lut(self, p: int, q: int, res_type: str, mem_mode: str, ram_style: str) -> int:
        w, a = self.wbits, self.ibits
        wmem = self.MW * self.MH / (p * q)
        c2 = 0
        if (mem_mode == "decoupled" and ram_style == "distributed") or (mem_mode == "const" and wmem <= 128):
            c2 = p * q * w * ceil_div(wmem, 64)
        mult = 0 if res_type == "dsp" else q * (2 * ceil_div(w + a, 6) - 1) * (w + a)
        addertree = (w + a) * (2 * q - 1)
        acc = self.acc_bits()
        thr = comp = 0
        if self.activation:
            levels = 2 ** self.obits - 1
            thr = levels * acc * ceil_div(self.MH / p, 64)
            comp = levels * acc
        return int(300 + 1.1 * p * (mult + addertree + acc + thr + comp) + c2)

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        p, q = folding["PE"], folding["SIMD"]
        res_type = "dsp" if variant.get("resType") == "dsp" else "lut"
        mem_mode = MEM_MODES.get(str(variant.get("mem_mode", "decoupled")), "decoupled")
        ram_style = str(variant.get("ram_style", "block"))
        dsp = p * q * ceil_div(self.wbits + self.ibits, 48) if res_type == "dsp" else 0
        return res(
            lut=self.lut(p, q, res_type, mem_mode, ram_style),
            bram18=_mvau_bram(self.MW, self.MH, p, q, self.wbits, mem_mode, ram_style),
            uram=_mvau_uram(self.MW, self.MH, p, q, self.wbits, mem_mode, ram_style),
            dsp=dsp,
        )

    def in_width(self, folding: dict[str, int]) -> int:
        return folding["SIMD"] * self.ibits

    def out_width(self, folding: dict[str, int]) -> int:
        return folding["PE"] * self.obits

    @property
    def out_bits_per_frame(self) -> int:
        return self.n_vec * self.MH * self.obits

    def describe(self) -> str:
        return f"{self.MW}x{self.MH} x{self.n_vec} W{self.wbits}A{self.ibits}->{self.obits}"


@dataclass(eq=False)
class ConvDoublePacked(MVAU):
    """finn-experimental's first-layer convolution packing two MACs per DSP (sliding window included).

    FINN gives no cycle count for it; we use the MVAU count divided by MMV (MMV output pixels in parallel):
    (MH/P)·(MW/Q)·N_vec/MMV. DSP = P·MMV·Q/2; LUT = 300 + 1.1·P·(addertree + acc + thr + comp) (no
    multiplier LUTs); BRAM18 as the MVAU's block-RAM rule (no memory-mode choice). MMV ranges over the divisors
    of the output width `ofm_w`; the output stream carries MMV pixels of PE channels.
    """

    ofm_w: int = 1

    op: ClassVar[str] = "ConvDoublePacked"
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE", "SIMD", "MMV")
    variant_attrs: ClassVar[tuple[str, ...]] = ()
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {}
    cost_settings: ClassVar[tuple[str, ...]] = ()

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
