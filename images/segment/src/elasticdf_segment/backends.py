"""Segment backends. `emulation` runs the segment's layers with onnxruntime; `xrt` flashes the card build's
bitstream on the card the device plugin handed to the container, programs its VNx network layer with every
hosted segment's sockets, and relays frames between TCP and the card for first and last segments."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from elasticdf_contract.builds import BUILD_DIR, XCLBIN_FILE, segment_file
from elasticdf_contract.wiring import CardWiring, Endpoint, SegmentWiring, vnx_socket_pairs

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


def _peer(endpoint: Endpoint, my_port: int) -> vnx.Socket | None:
    """A socket-table entry for a QSFP peer; None for the gateway (that side goes over TCP through the host)."""
    return vnx.Socket(endpoint.ip, endpoint.port, my_port) if endpoint.kind == "qsfp" else None


def socket_table(card: CardWiring) -> list[vnx.Socket | None]:
    """The card's whole VNx socket table: the (send, receive) pair of every hosted segment that streams to or
    from another card (wiring.vnx_socket_pairs)."""
    pairs = vnx_socket_pairs([not (w.first and w.last) for w in card.segments])
    table: list[vnx.Socket | None] = [None] * (2 * sum(p is not None for p in pairs))
    for w, pair in zip(card.segments, pairs):
        if pair:
            table[pair[0]], table[pair[1]] = _peer(w.downstream, w.listen.port), _peer(w.upstream, w.listen.port)
    return table


def bring_up(card: CardWiring, netlayer: vnx.Registers, cmac: vnx.Registers,
             sleep: Callable[[float], None] = time.sleep, link_timeout: float = 10.0) -> dict[str, str]:
    """Program the network layer once for every hosted segment, wait for the link, resolve the peers by ARP;
    returns peer IP -> MAC."""
    own = card.segments[0].listen  # CardWiring checks every hosted segment listens on this address
    if own.kind != "qsfp" or not own.ip or not own.mac:
        raise BackendError(f"xrt card {card.node}/{card.card} listens on {own}, not on a QSFP ip+mac")
    sockets = socket_table(card)
    peers = sorted({s.their_ip for s in sockets if s})
    subnet = ipaddress.ip_network(f"{own.ip}/24", strict=False)
    outside = [p for p in peers if ipaddress.ip_address(p) not in subnet]
    if outside:  # the VNx ARP table is indexed by the last octet: one /24 only
        raise BackendError(f"VNx peers must share {subnet} with {own.ip}; {outside} do not")
    vnx.program_networklayer(netlayer, own.ip, own.mac, sockets)
    waited = 0.0
    while not vnx.link_up(cmac):
        if waited >= link_timeout:
            raise BackendError(f"QSFP link of card {card.node}/{card.card} is down after {link_timeout:.0f} s "
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


class XrtCard:
    """The card of an xrt card pod: flashed once with its build's bitstream, then one VNx socket table for all
    hosted segments (skipped when no hosted segment has a QSFP peer: one-card instances)."""

    def __init__(self, card: CardWiring, device_index: int | None = None):
        self.card = card
        # the device plugin exposes only the allocated card, so inside the container it is device 0
        self.device_index = int(os.environ.get("ELASTICDF_XRT_DEVICE", "0")) if device_index is None else device_index
        self.pyxrt = self.device = self.uuid = None

    def start(self, pyxrt=None) -> None:
        pyxrt = pyxrt or import_pyxrt()
        device = pyxrt.device(self.device_index)
        uuid = device.load_xclbin(pyxrt.xclbin(self.bitstream()))
        if any(socket_table(self.card)):
            netlayer = PyxrtRegisters(pyxrt, device, uuid, "networklayer:{networklayer_0}")
            cmac = PyxrtRegisters(pyxrt, device, uuid, "cmac_0:{cmac_0}")
            peers = bring_up(self.card, netlayer, cmac)
            log.info("card %s/%d: VNx up on %s for %d segment(s), peers %s", self.card.node, self.card.card,
                     self.card.segments[0].listen.ip, len(self.card.segments), peers)
        self.pyxrt, self.device, self.uuid = pyxrt, device, uuid


    def bitstream(self) -> str:
        """The card build's one bitstream: card.xclbin of the pulled build, else the URI the operator took from
        spec.model.artifacts.bitstreams."""
        if any(w.artifacts.build for w in self.card.segments):
            return build_file(self.card.segments[0], XCLBIN_FILE)
        xclbins = {w.artifacts.xclbin for w in self.card.segments}
        if len(xclbins) != 1 or None in xclbins:
            raise BackendError(f"card {self.card.node}/{self.card.card}: mode xrt needs the card build's one "
                               f"bitstream (a pulled card build, or spec.model.artifacts.bitstreams"
                               f"[{self.card.build!r}]); the hosted segments name {sorted(map(str, xclbins))}")
        return split.local_path(xclbins.pop())


class XrtBackend:
    """One hosted segment on a started XrtCard: for the first/last segment, the host relay between TCP frames
    and its DMA kernels (relay.py); the k-th hosted segment drives `idma<k>` / `odma<k>` (prefixes from env
    ELASTICDF_IDMA / ELASTICDF_ODMA)."""

    mode = "xrt"

    def __init__(self, wiring: SegmentWiring, card: XrtCard, position: int, onnx_path: str | None = None):
        self.wiring = wiring
        self.card = card
        self.onnx_path = onnx_path
        self.idma = f"{os.environ.get('ELASTICDF_IDMA', 'idma')}{position}"
        self.odma = f"{os.environ.get('ELASTICDF_ODMA', 'odma')}{position}"
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

    def start(self) -> None:
        if self.card.device is None:
            raise BackendError(f"segment {self.wiring.segment}: its card is not flashed (XrtCard.start first)")
        if self.wiring.first or self.wiring.last:
            inputs, outputs = onnx_specs(segment_model(self.wiring, self.onnx_path))
            self.relay = relay.XrtRelay(self.card.pyxrt, self.card.device, self.card.uuid,
                                        inputs if self.wiring.first else None,
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
