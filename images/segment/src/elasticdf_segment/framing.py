"""Wire format between gateway and segments (emulation data path; also the gateway side of xrt pipelines).

One TCP connection carries a stream of frames, each a fixed 20-byte header, `ndim` u32 dims, then the payload.
All integers are big-endian; tensor payloads are the array's C-order bytes in little-endian (numpy native on
x86/arm64), so a frame decodes without copying on every platform we run.

    offset size field
    0      4    magic  b"EDF1"  (also lets the gateway tell frames from HTTP on one port)
    4      1    kind   0 tensor | 1 error (payload: UTF-8 message) | 2 hello (payload: UTF-8 JSON of the sender)
    5      1    dtype  code from DTYPES (0 for error/hello)
    6      2    ndim
    8      8    request id (u64; chosen by the gateway, carried unchanged through every segment)
    16     4    payload length in bytes
    20     4*ndim dims

A segment that fails on a frame forwards an error frame with the same request id, so the gateway answers that
request with the message instead of waiting for it. Nothing is ever retransmitted: a frame lost with a dead
connection is failed by the gateway (at most once per hop, never duplicated).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

MAGIC = b"EDF1"
HEADER = struct.Struct("!4sBBHQI")
KIND_TENSOR, KIND_ERROR, KIND_HELLO = 0, 1, 2
MAX_PAYLOAD = 1 << 30  # a corrupt length must not make us allocate the machine away
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("u1"), 3: np.dtype("i1"), 4: np.dtype("<i4"), 5: np.dtype("<i8"),
    6: np.dtype("<f2"), 7: np.dtype("<f8"), 8: np.dtype("<u2"), 9: np.dtype("<i2"), 10: np.dtype("?"),
}
DTYPE_CODES = {dt: code for code, dt in DTYPES.items()}


class FramingError(Exception):
    """The peer sent bytes that are not a frame (wrong magic, unknown dtype, absurd length)."""


@dataclass
class Frame:
    kind: int
    request_id: int
    tensor: np.ndarray | None = None
    message: str = ""

    @classmethod
    def of_tensor(cls, request_id: int, tensor: np.ndarray) -> Frame:
        return cls(KIND_TENSOR, request_id, tensor=tensor)

    @classmethod
    def error(cls, request_id: int, message: str) -> Frame:
        return cls(KIND_ERROR, request_id, message=message)

    @classmethod
    def hello(cls, text: str) -> Frame:
        return cls(KIND_HELLO, 0, message=text)


def encode(frame: Frame) -> bytes:
    if frame.kind == KIND_TENSOR:
        array = np.ascontiguousarray(frame.tensor)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        array = array.astype(dtype, copy=False)
        code = DTYPE_CODES.get(np.dtype(dtype.str))
        if code is None:
            raise FramingError(f"dtype {array.dtype} cannot be framed")
        payload = array.tobytes()
        dims = struct.pack(f"!{array.ndim}I", *array.shape)
        return HEADER.pack(MAGIC, KIND_TENSOR, code, array.ndim, frame.request_id, len(payload)) + dims + payload
    payload = frame.message.encode()
    return HEADER.pack(MAGIC, frame.kind, 0, 0, frame.request_id, len(payload)) + payload


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    if not data:
        return None  # clean EOF between frames
    if len(data) < n:
        raise ConnectionError(f"connection closed inside a frame ({len(data)} of {n} bytes)")
    return data


def read_frame(stream: BinaryIO) -> Frame | None:
    """The next frame from a buffered stream (socket.makefile("rb")), or None at a clean end of stream."""
    head = _read_exactly(stream, HEADER.size)
    if head is None:
        return None
    magic, kind, code, ndim, request_id, length = HEADER.unpack(head)
    if magic != MAGIC:
        raise FramingError(f"bad magic {magic!r}: peer does not speak the elasticdf frame protocol")
    if length > MAX_PAYLOAD:
        raise FramingError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
    dims = struct.unpack(f"!{ndim}I", _read_exactly(stream, 4 * ndim) or b"") if ndim else ()
    payload = _read_exactly(stream, length) if length else b""
    if payload is None:
        raise ConnectionError("connection closed before the payload")
    if kind == KIND_TENSOR:
        if code not in DTYPES:
            raise FramingError(f"unknown dtype code {code}")
        tensor = np.frombuffer(payload, dtype=DTYPES[code]).reshape(dims)
        return Frame(kind, request_id, tensor=tensor)
    if kind in (KIND_ERROR, KIND_HELLO):
        return Frame(kind, request_id, message=payload.decode(errors="replace"))
    raise FramingError(f"unknown frame kind {kind}")


def connect(host: str, port: int, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)  # blocking writes: a slow peer throttles us (backpressure) instead of failing
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
