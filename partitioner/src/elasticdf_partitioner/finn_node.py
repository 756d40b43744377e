"""One FINN dataflow ONNX node as the op modules see it (attributes, datatypes, initializers), and FINN's
integer DataTypes. Shared by the importer (finn_io), the op classes (ops/) and the emulation lowering, so
none of them imports another just for attribute access.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import onnx

DATAFLOW_DOMAIN = "finn.custom_op.fpgadataflow"


@dataclass(frozen=True)
class DataType:
    """A FINN/QONNX DataType: BIPOLAR {-1,+1}, BINARY {0,1}, TERNARY {-1,0,1}, INTn, UINTn; fixed-point and
    float types only carry their width (`integer` False)."""

    name: str
    bits: int
    signed: bool = False
    integer: bool = True

    @property
    def bipolar(self) -> bool:
        return self.name == "BIPOLAR"

    @property
    def min(self) -> float:
        if not self.integer:
            return -math.inf
        if self.bipolar or self.name == "TERNARY":
            return -1
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> float:
        if not self.integer:
            return math.inf
        if self.bipolar or self.name == "TERNARY":
            return 1
        return 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1

    @classmethod
    def parse(cls, name: str, where: str = "datatype") -> DataType:
        text = str(name).strip().upper()
        if text == "BIPOLAR":
            return cls(text, 1, signed=True)
        if text == "BINARY":
            return cls(text, 1)
        if text == "TERNARY":
            return cls(text, 2, signed=True)
        match = re.fullmatch(r"(U?)INT(\d+)", text)
        if match and int(match.group(2)) > 0:
            return cls(text, int(match.group(2)), signed=not match.group(1))
        match = re.fullmatch(r"(?:SCALEDINT<|FIXED<|FLOAT)(\d+)(?:,\d+)?>?", text)
        if match and int(match.group(1)) > 0:
            return cls(text, int(match.group(1)), signed=True, integer=False)
        raise InputError(where, f"unknown FINN datatype {name!r}",
                         ["BIPOLAR", "BINARY", "TERNARY", "INT<n>", "UINT<n>", "FIXED<w,i>", "FLOAT32"])

    @classmethod
    def of(cls, bits: int, signed: bool = False) -> DataType:
        """The plain integer type of `bits` bits: BINARY/BIPOLAR for one bit, else UINTn/INTn."""
        if bits == 1:
            return cls.parse("BIPOLAR" if signed else "BINARY")
        return cls.parse(f"{'' if signed else 'U'}INT{bits}")

    @classmethod
    def holding(cls, lo: float, hi: float) -> DataType:
        """The narrowest INTn/UINTn holding every integer in [lo, hi]."""
        if lo >= 0:
            return cls.of(max(2, int(hi).bit_length()))
        return cls.of(max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1, signed=True)


def datatype_bits(name: str, where: str = "datatype") -> int:
    """Bit width of a FINN/QONNX DataType name: BIPOLAR, BINARY, TERNARY, INT8, UINT4, FIXED<8,4>, FLOAT32, ..."""
    return DataType.parse(name, where).bits


@dataclass
class FinnNode:
    """Attribute and initializer access for one ONNX node, with errors naming the file, node and attribute."""

    proto: onnx.NodeProto
    source: str
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    attrs: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        from onnx import helper

        self.attrs = {}
        for attr in self.proto.attribute:
            value = helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, list):
                value = [v.decode() if isinstance(v, bytes) else v for v in value]
            self.attrs[attr.name] = value

    @property
    def name(self) -> str:
        return self.proto.name or f"<unnamed {self.proto.op_type}>"

    def where(self, attr: str) -> str:
        return f"{self.source}: node {self.name} ({self.proto.op_type}).{attr}"

    def get(self, attr: str, default: Any = None) -> Any:
        if attr in self.attrs:
            return self.attrs[attr]
        if default is None:
            raise InputError(self.where(attr), "missing attribute")
        return default

    def first(self, attrs: tuple[str, ...], default: Any = None) -> str:
        """The first of several spellings of an attribute that the node has (FINN renamed some)."""
        for attr in attrs:
            if attr in self.attrs:
                return attr
        if default is None:
            raise InputError(self.where(attrs[0]), "missing attribute")
        return attrs[0]

    def int(self, attr: str, default: int | None = None) -> int:
        value = self.get(attr, default)
        if isinstance(value, list):  # [H, W] style attributes: square images only
            if not value:
                raise InputError(self.where(attr), "empty list")
            value = value[0]
        if not isinstance(value, int) or value < 0:
            raise InputError(self.where(attr), f"expected a non-negative integer, got {value!r}")
        return value

    def ints(self, attr: str, default: list[int] | None = None) -> list[int]:
        value = self.get(attr, default)
        value = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and v >= 0 for v in value):
            raise InputError(self.where(attr), f"expected integers, got {value!r}")
        return value

    def dtype(self, attr: str, default: str | None = None) -> DataType:
        return DataType.parse(self.get(attr, default), self.where(attr))

    def bits(self, attr: str, default: str | None = None) -> int:
        return self.dtype(attr, default).bits

    def vectors(self) -> tuple[int, ...]:
        """numInputVectors: the leading dims of the node's tensors ([1] for one vector, [1, H, W] for images)."""
        return tuple(self.ints("numInputVectors", [1]))

    def n_vec(self) -> int:
        return math.prod(self.vectors())

    def settings(self, attrs: tuple[str, ...]) -> dict:
        return {a: self.attrs[a] for a in attrs if a in self.attrs}

    def param(self, index: int) -> np.ndarray:
        """The initializer feeding input `index` (weights, thresholds, channelwise parameters)."""
        from onnx import numpy_helper

        if len(self.proto.input) <= index or self.proto.input[index] not in self.initializers:
            raise InputError(self.where(f"input[{index}]"), "expected an initializer (weights or thresholds)")
        return numpy_helper.to_array(self.initializers[self.proto.input[index]])
