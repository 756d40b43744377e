"""VVAU (FINN `Vector_Vector_Activate_Batch` v0.6, `VVAU_hls`/`VVAU_rtl` today): depthwise convolution.

v0.6 model (reference §3.1/3.2), with C channels, kernel K_h×K_w, P = PE:
- cycles = (C·K_h·K_w / P)·OFM_h·OFM_w
- WMEM = K_h·K_w·C/P, TMEM = C/P; weights live in the HLS kernel (BRAM when WMEM > 128, else LUTs).
- LUT = int(300 + 1.1·P·(mult + acc + thr + comp) + c2), c2 = P·W·ceil(WMEM/64) if WMEM <= 128
- DSP = P·ceil((W+A)/48) for resType dsp.
Folding: PE divides C. Its producer SWG's SIMD is tied to PE (a graph Tie), so all foldings stay in options.
Variants: resType lut|dsp.

FINN semantics: out[c] = sum over the window of x[kh, kw, c]·W[c, 0, kh, kw] (weights (C, 1, K, K); BIPOLAR
inputs and weights count agreeing signs), then the optional MultiThreshold with ActVal as MVAU. The input
comes from a depthwise sliding window whose lanes interleave channels (ops/swg.py); `lower` undoes that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..finn_node import DataType, FinnNode
from .base import (
    SETTINGS_ATTRS,
    FinnLayer,
    FinnNodeSpec,
    LaneStreams,
    Tensor,
    ceil_div,
    clog2,
    divisors,
    draw,
    input_type,
    res,
    spread_thresholds,
    uniform_moments,
)

if TYPE_CHECKING:
    import numpy as np

    from ..lowering import Lowering


def _vvau_bram(wmem: float, w: int, p: int) -> int:
    if wmem <= 128:
        return 0
    if w == 1:
        return ceil_div(wmem, 16384) * p
    if w == 2:
        return ceil_div(wmem, 8192) * p
    if w <= 4:
        return ceil_div(wmem, 4096) * ceil_div(w, 4) * p
    if w <= 9:
        return ceil_div(wmem, 2048) * ceil_div(w, 8) * p
    if w <= 18 or wmem > 512:
        return ceil_div(wmem, 1024) * ceil_div(w, 16) * p
    return ceil_div(wmem, 512) * ceil_div(w, 32) * p


@dataclass(eq=False)
class VVAU(LaneStreams, FinnLayer):
    name: str
    channels: int
    kernel: int = 3
    ofm: int = 1
    wbits: int = 4
    ibits: int = 4
    obits: int = 4
    activation: bool = True
    settings: dict = field(default_factory=dict)

    op: ClassVar[str] = "VVAU"
    finn_op_types: ClassVar[tuple[str, ...]] = (
        "Vector_Vector_Activate_Batch", "VectorVectorActivation", "VVAU", "VVAU_rtl", "VVAU_hls")
    folding_attrs: ClassVar[tuple[str, ...]] = ("PE",)
    variant_attrs: ClassVar[tuple[str, ...]] = ("resType",)
    variant_values: ClassVar[dict[str, tuple[str, ...]]] = {"resType": ("lut", "dsp", "auto")}
    prune_across_foldings: ClassVar[bool] = False

    def foldings(self) -> list[dict[str, int]]:
        return [{"PE": p} for p in divisors(self.channels)]

    def variants(self, folding: dict[str, int]) -> list[dict[str, str]]:
        return [{"resType": "lut"}, {"resType": "dsp"}]

    def cycles(self, folding: dict[str, int]) -> int:
        # (C·K·K/P)·OFM²
        return self.channels * self.kernel * self.kernel // folding["PE"] * self.ofm * self.ofm

    def resources(self, folding: dict[str, int], variant: dict[str, str]):
        p, w, a = folding["PE"], self.wbits, self.ibits
        dsp_mult = variant.get("resType") == "dsp"
        wmem = self.kernel * self.kernel * self.channels / p
        c2 = p * w * ceil_div(wmem, 64) if wmem <= 128 else 0
        mult = 0 if dsp_mult else (2 * ceil_div(w + a, 6) - 1) * (w + a)
        acc = w + a + clog2(self.kernel * self.kernel)
        thr = comp = 0
        if self.activation:
            levels = 2 ** self.obits - 1
            thr = levels * acc * ceil_div(self.channels / p, 64)
            comp = levels * acc
        lut = int(300 + 1.1 * p * (mult + acc + thr + comp) + c2)
        dsp = p * ceil_div(w + a, 48) if dsp_mult else 0
        return res(lut=lut, bram18=_vvau_bram(wmem, w, p), dsp=dsp)

    @property
    def out_bits_per_frame(self) -> int:
        return self.ofm * self.ofm * self.channels * self.obits

    def describe(self) -> str:
        return f"dw{self.kernel}x{self.kernel} C{self.channels} @{self.ofm} W{self.wbits}A{self.ibits}"

    # --- FINN ONNX ----------------------------------------------------------------------------------------
    @classmethod
    def from_finn(cls, node: FinnNode) -> VVAU:
        return cls(node.name, channels=node.int("Channels"), kernel=node.int("Kernel"), ofm=node.int("Dim"),
                   wbits=node.bits("weightDataType"), ibits=node.bits("inputDataType"),
                   obits=node.bits("outputDataType"), activation=node.int("noActivation", 0) == 0,
                   settings=node.settings(SETTINGS_ATTRS))

    def finn_input(self) -> Tensor:
        return Tensor((1, self.ofm, self.ofm, self.kernel * self.kernel * self.channels), DataType.of(self.ibits))

    def to_finn(self, rng: np.random.Generator, inputs: list[Tensor]) -> FinnNodeSpec:
        import numpy as np

        idt = input_type(inputs[0], self.ibits)
        wdt = DataType.of(self.wbits, signed=True)
        weights = draw(rng, wdt, (self.channels, 1, self.kernel, self.kernel))
        odt = DataType.of(self.obits, signed=not self.activation)
        params = [weights]
        if self.activation:
            flat = weights.reshape(self.channels, -1).astype(np.float64)
            if idt.bipolar and wdt.bipolar:
                mean, sd = np.full(self.channels, flat.shape[1] / 2), np.full(self.channels, np.sqrt(flat.shape[1]) / 2)
            else:
                x_mean, x_var = uniform_moments(idt)
                mean, sd = x_mean * flat.sum(axis=1), np.sqrt(x_var * np.square(flat).sum(axis=1))
            params.append(spread_thresholds(rng, mean - 2 * sd, mean + 2 * sd, self.channels, 2 ** self.obits - 1))
        attrs = self.finn_attrs(Channels=self.channels, Kernel=[self.kernel, self.kernel], Dim=[self.ofm, self.ofm],
                                inputDataType=idt.name, weightDataType=wdt.name, outputDataType=odt.name,
                                noActivation=int(not self.activation), ActVal=0)
        return FinnNodeSpec(self.export_op_type, attrs, [Tensor((1, self.ofm, self.ofm, self.channels), odt)], params)

    @classmethod
    def lower(cls, node: FinnNode, ctx: Lowering, inputs: list[str]) -> list[str]:
        import numpy as np

        from ..lowering import exact_type, multithreshold
        from .swg import window_values

        channels, k, dim = node.int("Channels"), node.int("Kernel"), node.int("Dim")
        idt, wdt = node.dtype("inputDataType"), node.dtype("weightDataType")
        weights = node.param(1).astype(np.float64).reshape(channels, k * k).T  # (K·K, C) like the windows
        popcount = idt.bipolar and wdt.bipolar
        x_max = 1 if popcount else max(abs(idt.min), abs(idt.max))
        bound = k * k * float(np.abs(weights).max(initial=0)) * x_max
        elem = exact_type(bound)
        windows = ctx.cast(window_values(ctx, inputs[0], dim, k * k, channels), elem)  # (1, D, D, K·K, C)
        products = ctx.op("Mul", [windows, ctx.const(weights, "weights", elem)])
        acc = ctx.op("ReduceSum", [products, ctx.ints([3], "axes")], keepdims=0)
        if popcount:
            acc = ctx.affine(acc, 0.5, k * k / 2)
        odt = node.dtype("outputDataType")
        if node.int("noActivation", 0) == 1:
            return [ctx.cast(acc, exact_type(odt.min, odt.max))]
        scale, bias = (2, -1) if odt.bipolar else (1, int(node.get("ActVal", 0)))
        value_range = (0, k * k) if popcount else (-int(bound), int(bound)) if idt.integer else None
        return [multithreshold(ctx, acc, node.param(2), scale, bias, value_range)]
