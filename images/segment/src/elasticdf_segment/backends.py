"""Segment backends. `emulation` runs the segment's layers with onnxruntime; `xrt` flashes the segment's
bitstream on the card the device plugin handed to the container and programs its VNx network layer."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from elasticdf_contract.builds import BUILD_DIR, XCLBIN_FILE, segment_file
from elasticdf_contract.wiring import Endpoint, SegmentWiring

from . import relay, split, vnx

log = logging.getLogger("elasticdf.segment")


class BackendError(RuntimeError):
    """The backend cannot run here; the message says why and what to do."""


def build_file(wiring: SegmentWiring, name: str) -> str:
    """File `name` of the card build the pod's init container pulled and verified (`elasticdf build pull` into
    $ELASTICDF_BUILD_DIR, default BUILD_DIR)."""
    path = Path(os.environ.get("ELASTICDF_BUILD_DIR") or BUILD_DIR) / name
    if not path.is_file():
        present = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        raise BackendError(f"{wiring.instance_id} segment {wiring.segment}: the card build {wiring.artifacts.build} "
                           f"has no {name} in {path.parent} (it holds {', '.join(present) or 'nothing'})")
    return str(path)


def segment_model(wiring: SegmentWiring, onnx_path: str | None = None):
    """This segment's standard ONNX: an already cut file, the segment file of the pulled card build, or the
    wiring's model made runnable (a zoo model built from its seed, a FINN dataflow or QONNX model lowered to
    standard ops) and cut to the layer range."""
    if onnx_path:
        return split.load(onnx_path)
    if wiring.artifacts.build:
        return split.load(build_file(wiring, segment_file(*wiring.layer_range)))
    if not wiring.artifacts.onnx:
        raise BackendError(f"{wiring.instance_id} segment {wiring.segment}: needs the model's ONNX "
                           "(spec.model.name or spec.model.artifacts.onnx) but the wiring has none")
    first, last = wiring.layer_range
    return split.cut(split.runnable(wiring.artifacts.onnx, wiring.artifacts.onnx_sha256), first, last)


class EmulationBackend:
    mode = "emulation"

    def __init__(self, wiring: SegmentWiring, onnx_path: str | None = None, threads: int = 1):
        self.wiring = wiring
        self.onnx_path = onnx_path
        self.threads = threads
        self.session = None

    def start(self) -> None:
        import onnxruntime as ort
        from onnx import helper

        model = segment_model(self.wiring, self.onnx_path)
        options = ort.SessionOptions()
        # One compute thread per segment by default: a segment is one stage of a pipeline whose other stages
        # run in parallel on the other cores; a thread pool would only make the stages fight for them, and a
        # spinning pool burns cores that the neighbours (and the network threads) need.
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(model.graph.input[0].type.tensor_type.elem_type))
        self.output_names = [self.session.get_outputs()[0].name]

    def process(self, tensor: np.ndarray) -> np.ndarray:
        """The gateway sends frames in the request's datatype (its values already checked to convert exactly):
        the cast to the model's input happens here, on the segment's core, not in the gateway."""
        return self.session.run(self.output_names, {self.input_name: tensor.astype(self.input_dtype, copy=False)})[0]

    def ready(self) -> tuple[bool, str]:
        return (self.session is not None, "" if self.session else "model not loaded")


def import_pyxrt():
    try:
        import pyxrt  # noqa: PLC0415 - only this backend may need XRT
    except ImportError as exc:
        raise BackendError("mode xrt needs pyxrt (XRT's Python binding, /opt/xilinx/xrt/python on PYTHONPATH); "
                           f"it is not importable here ({exc}). Use mode emulation or the xrt segment image.") from exc
    return pyxrt


def xrt_available() -> bool:
    """True when pyxrt imports and device 0 opens (what `auto` asks)."""
    try:
        pyxrt = import_pyxrt()
        pyxrt.device(0)
    except Exception:  # noqa: BLE001 - any failure means: no usable card here
        return False
    return True


class PyxrtRegisters:
    """AXI-Lite access to one IP of the loaded xclbin (pyxrt.ip where XRT has it, else an exclusive kernel)."""

    def __init__(self, pyxrt, device, uuid, name: str):
        if hasattr(pyxrt, "ip"):
            self.handle = pyxrt.ip(device, uuid, name)
        else:
            self.handle = pyxrt.kernel(device, uuid, name, pyxrt.kernel.cu_access_mode.exclusive)

    def read(self, offset: int) -> int:
        return int(self.handle.read_register(offset))

    def write(self, offset: int, value: int) -> None:
        self.handle.write_register(offset, value)


def sockets_for(wiring: SegmentWiring) -> list[vnx.Socket | None]:
    """Socket 0 sends to the next segment, socket 1 receives from the previous one (QSFP peers only)."""
    def peer(endpoint: Endpoint) -> vnx.Socket | None:
        if endpoint.kind != "qsfp":
            return None
        return vnx.Socket(endpoint.ip, endpoint.port, wiring.listen.port)
    return [peer(wiring.downstream), peer(wiring.upstream)]


def bring_up(wiring: SegmentWiring, netlayer: vnx.Registers, cmac: vnx.Registers,
             sleep: Callable[[float], None] = time.sleep, link_timeout: float = 10.0) -> dict[str, str]:
    """Program the network layer, wait for the link, resolve the peers by ARP; returns peer IP -> MAC."""
    own = wiring.listen
    if own.kind != "qsfp" or not own.ip or not own.mac:
        raise BackendError(f"xrt segment {wiring.segment} listens on {own}, not on a QSFP ip+mac")
    sockets = sockets_for(wiring)
    peers = [s.their_ip for s in sockets if s]
    subnet = ipaddress.ip_network(f"{own.ip}/24", strict=False)
    outside = [p for p in peers if ipaddress.ip_address(p) not in subnet]
    if outside:  # the VNx ARP table is indexed by the last octet: one /24 only
        raise BackendError(f"VNx peers must share {subnet} with {own.ip}; {outside} do not")
    vnx.program_networklayer(netlayer, own.ip, own.mac, sockets)
    waited = 0.0
    while not vnx.link_up(cmac):
        if waited >= link_timeout:
            raise BackendError(f"QSFP link of card {wiring.card} is down after {link_timeout:.0f} s "
                               "(cable, switch port, or RS-FEC mismatch)")
        sleep(0.5)
        waited += 0.5
    return vnx.resolve_peers(netlayer, peers, sleep=sleep) if peers else {}


def onnx_specs(model) -> tuple[relay.TensorSpec, relay.TensorSpec]:
    """Input and output tensor of a segment ONNX: what the host relay's device buffers must hold."""
    from onnx import helper

    def spec(value) -> relay.TensorSpec:
        t = value.type.tensor_type
        dims = tuple(d.dim_value for d in t.shape.dim)
        if any(d <= 0 for d in dims):
            raise BackendError(f"segment tensor {value.name} has a dynamic shape {dims}: the relay needs fixed sizes")
        return relay.TensorSpec(dims, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)))
    return spec(model.graph.input[0]), spec(model.graph.output[0])


class XrtBackend:
    """Flash, bring up VNx, and for the first/last segment relay frames between TCP and the card (relay.py)."""

    mode = "xrt"

    def __init__(self, wiring: SegmentWiring, device_index: int | None = None, onnx_path: str | None = None,
                 idma: str | None = None, odma: str | None = None):
        self.wiring = wiring
        # the device plugin exposes only the allocated card, so inside the container it is device 0
        self.device_index = int(os.environ.get("ELASTICDF_XRT_DEVICE", "0")) if device_index is None else device_index
        self.onnx_path = onnx_path
        self.idma = idma or os.environ.get("ELASTICDF_IDMA", "idma0")
        self.odma = odma or os.environ.get("ELASTICDF_ODMA", "odma0")
        self.relay: relay.XrtRelay | None = None
        self.state = "not started"

    @property
    def relays_tcp(self) -> bool:
        """True when frames reach this segment over TCP from the gateway (first segment)."""
        return self.wiring.first

    @property
    def returns_tcp(self) -> bool:
        """True when this segment sends results over TCP (first and last on one card)."""
        return self.wiring.first and self.wiring.last

    def start(self, pyxrt=None) -> None:
        pyxrt = pyxrt or import_pyxrt()
        if self.wiring.artifacts.xclbin:
            path = split.local_path(self.wiring.artifacts.xclbin)
        elif self.wiring.artifacts.build:
            path = build_file(self.wiring, XCLBIN_FILE)
        else:
            raise BackendError(f"segment {self.wiring.segment}: mode xrt needs a bitstream "
                               "(spec.model.artifacts.bitstreams or a card build) but the wiring has none")
        device = pyxrt.device(self.device_index)
        uuid = device.load_xclbin(pyxrt.xclbin(path))
        self.device, self.uuid = device, uuid
        if not (self.wiring.first and self.wiring.last):  # a one-card instance has no VNx peers
            netlayer = PyxrtRegisters(pyxrt, device, uuid, "networklayer:{networklayer_0}")
            cmac = PyxrtRegisters(pyxrt, device, uuid, "cmac_0:{cmac_0}")
            peers = bring_up(self.wiring, netlayer, cmac)
            log.info("segment %d: VNx up on %s, peers %s", self.wiring.segment, self.wiring.listen.ip, peers)
        if self.wiring.first or self.wiring.last:
            inputs, outputs = onnx_specs(segment_model(self.wiring, self.onnx_path))
            self.relay = relay.XrtRelay(pyxrt, device, uuid, inputs if self.wiring.first else None,
                                        outputs if self.wiring.last else None, self.idma, self.odma)
        self.state = "ready"
        if self.wiring.last and not self.wiring.first:
            # odma results carry no request id; the first segment would have to hand its ids (in order) to the
            # last one, which runs on another node. Until that channel exists the gateway could not match them.
            self.state = ("host relay: request-id hand-over from the first to the last segment (on another card) "
                          "is not implemented; output DMA relay is ready")

    def process(self, tensor: np.ndarray) -> np.ndarray | None:
        """First segment: TCP frame -> idma. First and last on one card: idma -> odma -> result."""
        if self.relay is None:
            raise BackendError(f"segment {self.wiring.segment} is not started or has no host relay")
        if self.returns_tcp:
            return self.relay.process(tensor)
        self.relay.push(tensor)
        return None  # the frame continues over VNx

    def ready(self) -> tuple[bool, str]:
        return self.state == "ready", "" if self.state == "ready" else self.state


def choose(mode: str) -> str:
    if mode == "auto":
        return "xrt" if xrt_available() else "emulation"
    if mode not in ("xrt", "emulation"):
        raise BackendError(f"unknown mode {mode!r} (auto, xrt, emulation)")
    return mode
