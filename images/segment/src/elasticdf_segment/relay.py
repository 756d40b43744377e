"""Host relay between the gateway's TCP frames and the card, for the first and last segment in xrt mode.

Middle segments never touch the host: VNx moves their frames card to card. The first segment's card has an input
DMA kernel that reads a frame from device memory into the dataflow pipeline; the last segment's card has an output
DMA kernel that writes the pipeline's result into device memory. This module drives those two kernels with
pyxrt, and only through the handful of calls below, so a recording fake can check every call in the unit tests.

Checked against documentation (XRT "XRT Python Bindings" page, xilinx.github.io/XRT/2022.1/html/pyxrt.html, and
the XRT native API / UG1393 pages it mirrors):
  - `pyxrt.kernel(device, uuid, name)`; `kernel.group_id(arg)` is the memory bank of argument `arg`;
  - `pyxrt.bo(device, size, pyxrt.bo.normal, group)` allocates a host+device buffer in that bank;
  - `bo.map()` returns a writable memoryview of the host side; `bo.sync(direction, size, offset)` DMAs it,
    directions `pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE` / `..._FROM_DEVICE`;
  - calling a kernel with its arguments, `kernel(arg0, arg1, ...)`, starts a run and returns a `pyxrt.run`;
    `run.wait()` blocks until it completes and returns an `ert_cmd_state`.
Checked against FINN's own Alveo driver (finn driver_base.py, `execute_on_buffers`, platform "alveo"): the DMA
kernels are called `idma<i>` / `odma<i>` and started as `idma.start(input_buffer, batch_size)` and
`odma.start(output_buffer, batch_size)` — argument 0 is the buffer, argument 1 the number of frames; FINN
syncs the input buffer to the device before starting idma and syncs the output buffer from the device after
odma completes, and starts odma for a batch before waiting on it.

Assumptions (not verifiable without a card and the segment's bitstream):
  - the segment bitstream keeps FINN's names `idma0` / `odma0` (overridable) and a batch of 1 frame per run;
  - the bytes a DMA moves are the tensor's bytes in the segment ONNX's input/output dtype (C order; a frame in
    another dtype, as the gateway sends a request's own datatype, is cast first): the ONNX input/output
    shapes and dtypes of the segment give the buffer sizes. A bitstream with FINN's bit-packed IO needs its
    packing applied by the client — the relay checks sizes, it does not repack;
  - `run.wait()` returning `ert_cmd_state.ERT_CMD_STATE_COMPLETED` (or the value 4 when the enum is absent)
    means success, as in XRT's examples.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

COMPLETED = 4  # ERT_CMD_STATE_COMPLETED in XRT's ert.h


class RelayError(RuntimeError):
    pass


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class _Dma:
    """One DMA kernel with its own one-frame buffer object, mapped once."""

    def __init__(self, pyxrt, device, uuid, name: str, spec: TensorSpec):
        self.pyxrt, self.name, self.spec = pyxrt, name, spec
        self.kernel = pyxrt.kernel(device, uuid, name)
        self.bo = pyxrt.bo(device, spec.nbytes, pyxrt.bo.normal, self.kernel.group_id(0))
        self.host = np.frombuffer(self.bo.map(), dtype=np.uint8, count=spec.nbytes)

    def start(self):
        return self.kernel(self.bo, 1)  # FINN: (buffer, batch size)

    def check(self, run) -> None:
        state = run.wait()
        completed = getattr(getattr(self.pyxrt, "ert_cmd_state", None), "ERT_CMD_STATE_COMPLETED", COMPLETED)
        if state is not None and state != completed and int(state) != COMPLETED:
            raise RelayError(f"{self.name} run ended in state {state}")


class XrtRelay:
    """Drives `idma0` (first segment) and/or `odma0` (last segment) for one frame at a time.

    `push(tensor)`: copy the frame into the input buffer, sync it to the device, run idma (buffer, 1).
    `pull()`: run odma (buffer, 1), sync the output buffer from the device, return a copy as a tensor.
    `process(tensor)`: both, for a segment that is first and last on one card: odma is started before idma so
    the result has somewhere to go, as FINN's driver does.
    Runs are serialized by a lock: one frame in flight per DMA, matching the one-frame buffers.
    """

    def __init__(self, pyxrt, device, uuid, inputs: TensorSpec | None, outputs: TensorSpec | None,
                 idma: str = "idma0", odma: str = "odma0"):
        if inputs is None and outputs is None:
            raise RelayError("a relay needs an input side, an output side or both")
        self.idma = _Dma(pyxrt, device, uuid, idma, inputs) if inputs else None
        self.odma = _Dma(pyxrt, device, uuid, odma, outputs) if outputs else None
        self.sync = pyxrt.xclBOSyncDirection
        self.lock = threading.Lock()

    def _write(self, tensor: np.ndarray) -> None:
        spec = self.idma.spec
        array = np.ascontiguousarray(tensor, dtype=spec.dtype)  # frames come in the request's datatype
        if array.nbytes != spec.nbytes:
            raise RelayError(f"frame {array.shape} {array.dtype} ({array.nbytes} bytes) does not fit "
                             f"{self.idma.name}: expects {spec.shape} {spec.dtype} ({spec.nbytes} bytes)")
        self.idma.host[:] = array.reshape(-1).view(np.uint8)
        self.idma.bo.sync(self.sync.XCL_BO_SYNC_BO_TO_DEVICE, spec.nbytes, 0)

    def _read(self) -> np.ndarray:
        spec = self.odma.spec
        self.odma.bo.sync(self.sync.XCL_BO_SYNC_BO_FROM_DEVICE, spec.nbytes, 0)
        return self.odma.host.copy().view(spec.dtype).reshape(spec.shape)

    def push(self, tensor: np.ndarray) -> None:
        if self.idma is None:
            raise RelayError("this segment has no input DMA (it is not the first segment)")
        with self.lock:
            self._write(tensor)
            self.idma.check(self.idma.start())

    def pull(self) -> np.ndarray:
        if self.odma is None:
            raise RelayError("this segment has no output DMA (it is not the last segment)")
        with self.lock:
            self.odma.check(self.odma.start())
            return self._read()

    def process(self, tensor: np.ndarray) -> np.ndarray:
        if self.idma is None or self.odma is None:
            raise RelayError("process() needs both DMAs (a segment that is first and last)")
        with self.lock:
            self._write(tensor)
            out_run = self.odma.start()
            self.idma.check(self.idma.start())
            self.odma.check(out_run)
            return self._read()
