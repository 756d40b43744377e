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

Request ids carry their origin: the high 32 bits are the random id of the gateway replica that sent the request
(`origin_of`), the low 32 bits its counter. Results do not travel to a fixed address: every gateway replica dials
the last segment of each instance and opens that connection with a hello `{"role": "results", "origin": N}`;
the last segment sends each result over the connection whose origin matches its request id, so with several
gateway replicas every result returns to the replica that holds its request (and an unknown origin is dropped,
never delivered elsewhere). The last segment answers the hello with the same hello once it routes that origin
there: a gateway sends requests only after that echo, or their results could arrive before the subscription
and be dropped. The byte layout is unchanged; only the direction of the results connection is new.

A segment that fails on a frame forwards an error frame with the same request id, so the gateway answers that
request with the message instead of waiting for it. Nothing is ever retransmitted: a frame lost with a dead
connection is failed by the gateway (at most once per hop, never duplicated).

Three ways to read and write the same bytes: `encode_parts` (`batch_parts` for several arrays sent as one
tensor) / `read_frame_async` (asyncio streams; the gateway), `encode` / `read_frame` (bytes and buffered file
objects) and the per-frame-cheap pair the segment runtime uses, `send_frame` (one sendmsg of header + the array's
own memory) and `FrameReader` (recv_into a reusable buffer for headers, straight into the result array for
payloads). They interoperate in any combination: the wire format is unchanged.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

MAGIC = b"EDF1"
HEADER = struct.Struct("!4sBBHQI")
KIND_TENSOR, KIND_ERROR, KIND_HELLO = 0, 1, 2
ORIGIN_SHIFT = 32
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


def origin_of(request_id: int) -> int:
    """The gateway replica that sent the request (see the module docstring)."""
    return request_id >> ORIGIN_SHIFT


def results_hello(origin: int, sender: str) -> Frame:
    """What a gateway replica sends first on its results connection to a last segment."""
    return Frame.hello(json.dumps({"role": "results", "origin": origin, "gateway": sender}))


def results_origin(hello: Frame) -> int | None:
    """The origin a results hello subscribes to; None for any other hello (an upstream segment's)."""
    try:
        info = json.loads(hello.message)
    except ValueError:
        return None
    if isinstance(info, dict) and info.get("role") == "results" and isinstance(info.get("origin"), int):
        return info["origin"]
    return None


def _little_endian(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array.astype(array.dtype.newbyteorder("<")) if array.dtype.byteorder == ">" else array


def batch_parts(request_id: int, arrays: list[np.ndarray]) -> list[bytes | memoryview]:
    """One tensor frame whose tensor is `arrays` concatenated along axis 0 (one datatype, one frame shape), as
    buffers to write back to back: header + dims, then each array's own memory. A batch of requests leaves in
    one scatter write without being copied into one array first."""
    arrays = [_little_endian(a) for a in arrays]
    first = arrays[0]
    code = DTYPE_CODES.get(np.dtype(first.dtype.str))
    if code is None:
        raise FramingError(f"dtype {first.dtype} cannot be framed")
    if any(a.dtype != first.dtype or a.shape[1:] != first.shape[1:] for a in arrays[1:]):
        raise FramingError(f"a batch needs one dtype and one frame shape, got "
                           f"{sorted({(str(a.dtype), a.shape[1:]) for a in arrays})}")
    shape = first.shape if len(arrays) == 1 else (sum(len(a) for a in arrays), *first.shape[1:])
    head = HEADER.pack(MAGIC, KIND_TENSOR, code, len(shape), request_id, sum(a.nbytes for a in arrays))
    if shape:
        head += struct.pack(f"!{len(shape)}I", *shape)
    return [head, *(memoryview(a.reshape(-1)).cast("B") for a in arrays if a.nbytes)]


def encode_parts(frame: Frame) -> list[bytes | memoryview]:
    """The frame as buffers to write back to back (header, payload view); see `send_frame`."""
    if frame.kind == KIND_TENSOR:
        return batch_parts(frame.request_id, [frame.tensor])
    payload = frame.message.encode()
    return [HEADER.pack(MAGIC, frame.kind, 0, 0, frame.request_id, len(payload)) + payload]


def encode(frame: Frame) -> bytes:
    return b"".join(encode_parts(frame))


def send_frame(sock: socket.socket, frame: Frame) -> None:
    """Write one frame with a scatter write (sendmsg of header + the array's memory): no payload copy in user
    space and one syscall per frame while the socket buffer has room. Blocking, like sendall: a slow peer
    throttles the caller (backpressure)."""
    parts = encode_parts(frame)
    total = sum(len(p) for p in parts)
    sent = sock.sendmsg(parts)
    while sent < total:  # partial write (socket buffer full): finish part by part
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            sock.sendall(memoryview(part)[sent:])
            sent = 0
        break


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    if not data:
        return None  # clean EOF between frames
    if len(data) < n:
        raise ConnectionError(f"connection closed inside a frame ({len(data)} of {n} bytes)")
    return data


def _parse_header(head: bytes | memoryview) -> tuple[int, int, int, int, int]:
    magic, kind, code, ndim, request_id, length = HEADER.unpack(head)
    if magic != MAGIC:
        raise FramingError(f"bad magic {bytes(magic)!r}: peer does not speak the elasticdf frame protocol")
    if length > MAX_PAYLOAD:
        raise FramingError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
    if kind == KIND_TENSOR and code not in DTYPES:
        raise FramingError(f"unknown dtype code {code}")
    if kind not in (KIND_TENSOR, KIND_ERROR, KIND_HELLO):
        raise FramingError(f"unknown frame kind {kind}")
    return kind, code, ndim, request_id, length


def _checked_dtype(code: int, dims: tuple[int, ...], length: int) -> np.dtype:
    dtype = DTYPES[code]
    count = 1
    for d in dims:
        count *= d
    if count * dtype.itemsize != length:
        raise FramingError(f"payload of {length} bytes does not hold {dims} x {dtype}")
    return dtype


def _tensor_for(code: int, dims: tuple[int, ...], length: int) -> np.ndarray:
    return np.empty(dims, _checked_dtype(code, dims, length))


def read_frame(stream: BinaryIO) -> Frame | None:
    """The next frame from a buffered stream (socket.makefile("rb"), BytesIO), or None at a clean end of
    stream. Tensor payloads are read straight into a new array (readinto): one copy, writable result."""
    head = _read_exactly(stream, HEADER.size)
    if head is None:
        return None
    kind, code, ndim, request_id, length = _parse_header(head)
    dims = struct.unpack(f"!{ndim}I", _read_exactly(stream, 4 * ndim) or b"") if ndim else ()
    if kind == KIND_TENSOR:
        tensor = _tensor_for(code, dims, length)
        view = memoryview(tensor.reshape(-1)).cast("B")
        got = 0
        while got < length:
            n = stream.readinto(view[got:])
            if not n:
                raise ConnectionError(f"connection closed inside a frame ({got} of {length} payload bytes)")
            got += n
        return Frame(kind, request_id, tensor=tensor)
    payload = _read_exactly(stream, length) if length else b""
    if payload is None:
        raise ConnectionError("connection closed before the payload")
    return Frame(kind, request_id, message=payload.decode(errors="replace"))


async def read_frame_async(stream: asyncio.StreamReader) -> Frame | None:
    """The next frame from an asyncio stream (the gateway's results connections), or None at a clean end of
    stream. The payload is the one bytes object `readexactly` returns, viewed as the array (read-only)."""
    try:
        head = await stream.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ConnectionError(f"connection closed inside a frame ({len(exc.partial)} of {HEADER.size} bytes)") from exc
    kind, code, ndim, request_id, length = _parse_header(head)
    try:
        dims = struct.unpack(f"!{ndim}I", await stream.readexactly(4 * ndim)) if ndim else ()
        payload = await stream.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise ConnectionError(f"connection closed inside a frame ({len(exc.partial)} bytes of a part)") from exc
    if kind == KIND_TENSOR:
        dtype = _checked_dtype(code, dims, length)
        return Frame(kind, request_id, tensor=np.frombuffer(payload, dtype).reshape(dims))
    return Frame(kind, request_id, message=payload.decode(errors="replace"))


class FrameReader:
    """Frames from a socket with few syscalls and one copy per payload byte.

    Headers (and small payloads) come out of a reusable receive buffer that one `recv_into` fills with as many
    queued frames as have arrived; a large payload is received straight into its numpy array, so no bytes
    object is built and `np.frombuffer`-style views never pin a shared buffer. Same wire format as
    `read_frame`; use one reader per connection (it keeps the bytes it has read ahead)."""

    def __init__(self, sock: socket.socket, buffer_size: int = 1 << 16):
        self.sock = sock
        self.buffer = bytearray(buffer_size)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0

    def _fill(self, n: int) -> bool:
        """At least n bytes buffered; False at a clean EOF before any of them."""
        if self.end - self.start >= n:
            return True
        if n > len(self.buffer):
            raise FramingError(f"header of {n} bytes exceeds the receive buffer")
        if self.start + n > len(self.buffer):  # not enough room behind: move the partial frame to the front
            kept = self.end - self.start
            self.view[:kept] = self.view[self.start:self.end]
            self.start, self.end = 0, kept
        while self.end - self.start < n:
            got = self.sock.recv_into(self.view[self.end:])
            if not got:
                if self.end == self.start:
                    return False
                raise ConnectionError(f"connection closed inside a frame ({self.end - self.start} of {n} bytes)")
            self.end += got
        return True

    def _take(self, n: int) -> memoryview:
        chunk = self.view[self.start:self.start + n]
        self.start += n
        if self.start == self.end:
            self.start = self.end = 0
        return chunk

    def _read_into(self, target: memoryview) -> None:
        have = min(self.end - self.start, len(target))
        target[:have] = self._take(have)
        if have == len(target):
            return
        rest = len(target) - have
        if rest <= len(self.buffer) // 4:  # small: one recv also picks up the frames queued behind it
            if not self._fill(rest):
                raise ConnectionError("connection closed inside a frame payload")
            target[have:] = self._take(rest)
            return
        while have < len(target):
            got = self.sock.recv_into(target[have:])
            if not got:
                raise ConnectionError(f"connection closed inside a frame ({have} of {len(target)} payload bytes)")
            have += got

    def read(self) -> Frame | None:
        if not self._fill(HEADER.size):
            return None
        kind, code, ndim, request_id, length = _parse_header(self._take(HEADER.size))
        if ndim:
            if not self._fill(4 * ndim):
                raise ConnectionError("connection closed inside a frame header")
            dims = struct.unpack(f"!{ndim}I", self._take(4 * ndim))
        else:
            dims = ()
        if kind == KIND_TENSOR:
            tensor = _tensor_for(code, dims, length)
            if length:
                self._read_into(memoryview(tensor.reshape(-1)).cast("B"))
            return Frame(kind, request_id, tensor=tensor)
        payload = bytearray(length)
        if length:
            self._read_into(memoryview(payload))
        return Frame(kind, request_id, message=payload.decode(errors="replace"))


def tune(sock: socket.socket) -> socket.socket:
    """TCP_NODELAY: a frame's last segment leaves at once instead of waiting for the previous one's ACK."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(host: str, port: int, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)  # blocking writes: a slow peer throttles us (backpressure) instead of failing
    return tune(sock)
