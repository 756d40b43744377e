"""Open Inference Protocol tensors <-> the arrays the segments compute on.

A request's input arrives as bytes (binary extension, gRPC raw contents) or as a JSON/protobuf list. Bytes are
viewed as an array without copying; the batcher later casts each request into its slice of the batch frame in
one pass. Datatypes other than the model's are accepted when every value converts exactly (UINT8/INT8/FP16 into
FP32 always do; INT32/INT64/FP64 are checked value by value); anything else is a 400 naming the input, what was
sent and what is allowed. BYTES tensors have no exact numeric meaning for these models and are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .pipeline import RequestFailed

DATATYPES = {"BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "i1",
             "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
DATATYPE_OF = {np.dtype(v): k for k, v in DATATYPES.items()}
ALLOWED = ", ".join(DATATYPES)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, datatype and shape (-1: any size; the first axis is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(DATATYPES[self.datatype])

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def bad(message: str) -> RequestFailed:
    return RequestFailed(400, message)


def dtype_of(name: str, datatype: object) -> np.dtype:
    if datatype == "BYTES":
        raise bad(f"input {name!r}: datatype BYTES is not supported (the model takes numbers); use one of {ALLOWED}")
    if datatype not in DATATYPES:
        raise bad(f"input {name!r}: unknown datatype {datatype!r}; allowed: {ALLOWED}")
    return np.dtype(DATATYPES[datatype])


def checked_shape(name: str, shape: object, spec: TensorSpec, max_rows: int) -> tuple[int, ...]:
    """The request's shape when it fits the model input: same rank, same frame dims, 1..max_rows frames."""
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise bad(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    want = spec.shape  # () when the gateway cannot read the model: any frame shape, the segments check it
    fits = not want or (len(shape) == len(want) and all(w < 0 or w == d for w, d in zip(want[1:], shape[1:])))
    if not fits:
        raise bad(f"input {name!r}: shape {list(shape)} does not match the model input {list(want)} "
                  "(-1: any size; the first axis counts frames)")
    if not shape or not 1 <= shape[0] <= max_rows:
        raise bad(f"input {name!r}: shape {list(shape)} holds {shape[0] if shape else 0} frames; "
                  f"this gateway takes 1 to {max_rows} per request")
    return tuple(shape)


def check_exact(name: str, array: np.ndarray, target: np.dtype) -> None:
    """Refuse values that would change on conversion to the model's datatype (never round silently)."""
    if np.can_cast(array.dtype, target, "safe") or not array.size:
        return
    back = array.astype(target).astype(array.dtype)
    if not np.array_equal(back, array, equal_nan=array.dtype.kind == "f"):
        want = DATATYPE_OF[target]
        raise bad(f"input {name!r}: {DATATYPE_OF[array.dtype]} values that {want} cannot hold exactly "
                  f"(the model computes in {want}); send {want} or values {want} represents")


def from_bytes(name: str, datatype: object, shape: object, raw: bytes | memoryview, spec: TensorSpec,
               max_rows: int) -> np.ndarray:
    """A view of binary tensor data (no copy)."""
    dtype = dtype_of(name, datatype)
    dims = checked_shape(name, shape, spec, max_rows)
    need = math.prod(dims) * dtype.itemsize
    if len(raw) != need:
        raise bad(f"input {name!r}: {len(raw)} bytes of binary data, but shape {list(dims)} of {datatype} "
                  f"needs {need}")
    array = np.frombuffer(raw, dtype).reshape(dims)
    check_exact(name, array, spec.dtype)
    return array


def values(data: object, dtype: np.dtype) -> np.ndarray:
    """A flat list (what clients send) through np.fromiter, two to three times faster than np.asarray, which
    first walks the list to discover a nested shape; nested lists and protobuf contents through np.asarray."""
    if isinstance(data, list) and not (data and isinstance(data[0], list)):
        return np.fromiter(data, dtype, len(data))
    return np.asarray(data, dtype=dtype)


def from_list(name: str, datatype: object, shape: object, data: object, spec: TensorSpec,
              max_rows: int) -> np.ndarray:
    """JSON `data` (flat or nested) or protobuf contents as an array of the request's datatype."""
    dtype = dtype_of(name, datatype)
    dims = checked_shape(name, shape, spec, max_rows)
    try:
        array = values(data, dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad(f"input {name!r}: data is not a list of {datatype} values: {exc}") from exc
    need = math.prod(dims)
    if array.size != need:
        raise bad(f"input {name!r}: {array.size} values, but shape {list(dims)} needs {need}")
    array = array.reshape(dims)
    check_exact(name, array, spec.dtype)
    return array
