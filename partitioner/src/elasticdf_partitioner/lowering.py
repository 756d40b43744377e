"""The builder each op's `lower` writes standard ONNX into (opset 17), and the shared MultiThreshold lowering.

Conventions of every lowered model:
- tensors are NHWC, as FINN's dataflow tensors; values are exact small integers held in float32. A tensor whose
  values can reach 2**24 (where float32 stops holding every integer) is float64 instead: an op whose
  accumulator bound (e.g. 2048 8-bit weights times 8-bit inputs) reaches 2**24 computes in float64, and its
  output stays float64 when its output datatype is that wide. Consumers cast to what they compute in.
- every node of layer L is named "L/<op type>_<k>", every initializer and intermediate tensor "L/<hint>_<k>",
  so the segment runtime can regroup the nodes into FINN layers by the name before the first "/".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
FLOAT, DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE
EXACT_FLOAT32 = 2 ** 24  # float32 holds every integer of magnitude below this


def exact_type(*magnitudes: float) -> int:
    """FLOAT if every value (and partial sum) is bounded below 2**24 in magnitude, else DOUBLE."""
    return FLOAT if max(abs(m) for m in magnitudes) < EXACT_FLOAT32 else DOUBLE


class Lowering:
    """Collects the lowered nodes and initializers of one model, layer by layer."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.dtype: dict[str, int] = {}
        # tensor -> lanes of a depthwise sliding-window layout (see ops/swg.py); absent: plain (kh, kw, c) order
        self.interleave: dict[str, int] = {}
        self.layer = ""
        self._count: Counter[str] = Counter()

    def begin(self, layer: str) -> None:
        self.layer = layer

    def fresh(self, hint: str) -> str:
        key = f"{self.layer}/{hint}"
        self._count[key] += 1
        return f"{key}_{self._count[key]}"

    def const(self, value: Any, hint: str = "const", elem_type: int = FLOAT) -> str:
        dtype = {FLOAT: np.float32, DOUBLE: np.float64, TensorProto.INT64: np.int64}[elem_type]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        self.dtype[name] = elem_type
        return name

    def ints(self, values: list[int] | tuple[int, ...], hint: str = "shape") -> str:
        return self.const(list(values), hint, TensorProto.INT64)

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, elem_type: int | None = None,
           **attrs: Any) -> Any:
        """Append one node; returns its output name (or the list of names when it has several outputs).
        The outputs' element type is `elem_type`, or the first input's."""
        names = outputs if isinstance(outputs, list) else [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.fresh(op_type), **attrs))
        for name in names:
            self.dtype[name] = elem_type if elem_type is not None else self.dtype.get(inputs[0], FLOAT)
        return names[0] if len(names) == 1 else names

    def cast(self, tensor: str, elem_type: int) -> str:
        if self.dtype.get(tensor, FLOAT) == elem_type:
            return tensor
        return self.op("Cast", [tensor], to=elem_type, elem_type=elem_type)

    def reshape(self, tensor: str, shape: tuple[int, ...] | list[int]) -> str:
        """Reshape to FINN's shape, whose leading 1 is the batch axis: it becomes -1, so a cut segment runs
        any number of frames at once (the gateway batches requests)."""
        shape = tuple(shape)
        if len(shape) > 1 and shape[0] == 1:
            shape = (-1, *shape[1:])
        return self.op("Reshape", [tensor, self.ints(shape)])

    def affine(self, tensor: str, scale: float = 1, bias: float = 0) -> str:
        """scale·x + bias, emitting only the nodes that change something."""
        elem = self.dtype.get(tensor, FLOAT)
        if scale != 1:
            tensor = self.op("Mul", [tensor, self.const(scale, "scale", elem)])
        if bias != 0:
            tensor = self.op("Add", [tensor, self.const(bias, "bias", elem)])
        return tensor


# a lookup table replaces n comparisons per value; it is worth its size up to this many entries per threshold
# (15 thresholds of a 4-bit activation: 1M entries, 4 MB of float32)
LOOKUP_ENTRIES_PER_THRESHOLD = 2 ** 16


def multithreshold(ctx: Lowering, x: str, thresholds: np.ndarray, scale: float = 1, bias: float = 0,
                   value_range: tuple[int, int] | None = None) -> str:
    """QONNX MultiThreshold on the last (channel) axis: per channel c, the number of thresholds T[c, i] with
    x >= T[c, i], then scale·count + bias. `thresholds` is (C, n) or (1, n) (shared by all channels).
    The result is float32 (a count of at most n plus a small bias).

    When x holds integers of a known small range [lo, hi] (its datatype's), the result is one lookup in a
    per-channel table of every possible value (Gather), instead of n comparisons per value."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    entries = thresholds.shape[0] * (value_range[1] - value_range[0] + 1) if value_range else None
    if entries is not None and entries <= LOOKUP_ENTRIES_PER_THRESHOLD * thresholds.shape[1]:
        return _threshold_lookup(ctx, x, thresholds, scale, bias, value_range)
    elem = ctx.dtype.get(x, FLOAT)
    table = ctx.const(np.asarray(thresholds), "thresholds", elem)
    above = ctx.op("GreaterOrEqual", [ctx.op("Unsqueeze", [x, ctx.ints([-1], "axes")]), table],
                   elem_type=TensorProto.BOOL)
    count = ctx.op("ReduceSum", [ctx.op("Cast", [above], to=FLOAT, elem_type=FLOAT), ctx.ints([-1], "axes")],
                   keepdims=0)
    return ctx.affine(count, scale, bias)


def _threshold_lookup(ctx: Lowering, x: str, thresholds: np.ndarray, scale: float, bias: float,
                      value_range: tuple[int, int]) -> str:
    """MultiThreshold of integers in [lo, hi] as table[c·R + x - lo] with R = hi - lo + 1 table entries per
    channel. Values outside the range (which their datatype excludes) are clipped into it."""
    lo, hi = value_range
    values = np.arange(lo, hi + 1, dtype=np.float64)
    rows = np.sort(thresholds, axis=1)
    table = np.stack([np.searchsorted(row, values, side="right") for row in rows]) * scale + bias  # (C, R)
    elem = ctx.dtype.get(x, FLOAT)
    clipped = ctx.op("Clip", [x, ctx.const(lo, "lo", elem), ctx.const(hi, "hi", elem)])
    offsets = np.arange(rows.shape[0]) * len(values) - lo  # channel c's entries start at c·R
    index = ctx.op("Cast", [ctx.op("Add", [clipped, ctx.const(offsets, "offsets", elem)])], to=TensorProto.INT64,
                   elem_type=TensorProto.INT64)
    return ctx.op("Gather", [ctx.const(table.reshape(-1), "levels"), index], elem_type=FLOAT)
