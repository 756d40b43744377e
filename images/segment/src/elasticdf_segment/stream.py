"""The emulation data path: frames in from upstream over TCP, `process` each, results out downstream.

Threads and per-frame cost: the upstream reader computes each frame itself as soon as it has received it
(FrameReader: recv_into the array, no intermediate bytes), then hands the result to the sender through one
bounded queue; the sender writes header + array memory with one sendmsg. So a frame costs one thread handoff
per segment, and the receive, compute and send of consecutive frames still overlap (the kernel's socket buffer
holds the frames arriving while one is computed; the sender writes the previous result meanwhile).

Backpressure: the outbox is bounded (`queue_depth` results); a full outbox stops the reader, so the kernel's TCP
window fills and the upstream's blocking send waits — the same stall a full AXI stream causes on the card.
Frames are computed one at a time even if two upstream connections overlap (a reconnect while the old one
drains). Reconnects: upstream may (re)connect at any time (each connection gets a reader); downstream is dialled
with exponential backoff, and a watcher notices a closed downstream while idle so we redial at once.

The last segment (downstream kind "gateway") dials nobody: each gateway replica connects to it and subscribes
with a results hello (framing.results_hello); a result goes back over the connection of the replica whose origin
its request id carries, so any number of gateway replicas can share an instance.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
from elasticdf_contract.wiring import Endpoint, SegmentWiring

from .framing import (
    KIND_ERROR,
    KIND_HELLO,
    Frame,
    FrameReader,
    FramingError,
    connect,
    origin_of,
    results_origin,
    send_frame,
    tune,
)
from .observe import SegmentMetrics

log = logging.getLogger("elasticdf.segment")
BACKOFF_START, BACKOFF_MAX = 0.05, 1.0


def address(endpoint: Endpoint) -> tuple[str, int]:
    return endpoint.host or endpoint.ip or "", endpoint.port


class StreamNode:
    def __init__(self, wiring: SegmentWiring, process: Callable[[np.ndarray], np.ndarray],
                 metrics: SegmentMetrics, queue_depth: int = 8, bind: str = "0.0.0.0", send: bool = True):
        self.wiring = wiring
        self.process = process
        self.metrics = metrics
        self.bind = bind
        self.send = send  # False: results leave another way (xrt first segment: over VNx), nothing goes downstream
        self.to_gateway = wiring.last and wiring.downstream.kind == "gateway"  # results go to subscribers
        self.subscribers: dict[int, socket.socket] = {}  # gateway origin -> its results connection
        self.outbox: queue.Queue[Frame] = queue.Queue(queue_depth)
        self.downstream: socket.socket | None = None
        self.lock = threading.Lock()
        self.compute_lock = threading.Lock()  # one frame at a time, whatever the number of upstream connections
        self.stopping = threading.Event()
        self.listener: socket.socket | None = None
        self.name = f"{wiring.instance_id} segment {wiring.segment}"

    # -- lifecycle
    def start(self) -> None:
        self.listener = socket.create_server((self.bind, self.wiring.listen.port), reuse_port=False)
        for target, name in ((self._accept, "accept"), (self._send, "send"))[:2 if self.send else 1]:
            threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        if self.listener:
            self.listener.close()

    @property
    def connected(self) -> bool:
        return self.downstream is not None or not self.send or self.to_gateway

    # -- upstream side
    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            tune(conn)
            threading.Thread(target=self._read, args=(conn, peer), name=f"read-{peer}", daemon=True).start()

    def _read(self, conn: socket.socket, peer) -> None:
        log.info("%s: upstream connected from %s", self.name, peer)
        try:
            with conn:
                reader = FrameReader(conn)
                while (frame := reader.read()) is not None:
                    if frame.kind == KIND_HELLO:
                        self._hello(conn, frame)
                    else:
                        result = self._compute(frame)
                        if self.send:
                            self.outbox.put(result)  # blocks when full: backpressure upstream
        except (OSError, FramingError) as exc:
            log.warning("%s: upstream %s dropped: %s", self.name, peer, exc)
        self._unsubscribe(conn)
        log.info("%s: upstream %s closed", self.name, peer)

    def _hello(self, conn: socket.socket, hello: Frame) -> None:
        origin = results_origin(hello)
        if origin is None:
            log.info("%s: upstream is %s", self.name, hello.message)
            return
        if not self.to_gateway:
            log.warning("%s: ignoring results subscription %s: not the last segment", self.name, hello.message)
            return
        with self.lock:
            old = self.subscribers.get(origin)
            self.subscribers[origin] = conn
            # the acknowledgement (under the lock: no result goes out on conn before it); the gateway puts the
            # instance in rotation only now, so no result can come back before its origin is routed
            send_frame(conn, hello)
        if old is not None and old is not conn:  # the replica reconnected: the old connection is stale
            old.close()
        log.info("%s: results subscriber %s", self.name, hello.message)

    def _unsubscribe(self, conn: socket.socket) -> None:
        with self.lock:
            for origin in [o for o, c in self.subscribers.items() if c is conn]:
                del self.subscribers[origin]

    # -- compute
    def _compute(self, frame: Frame) -> Frame | None:
        if frame.kind == KIND_ERROR:  # an earlier segment failed this request: pass the reason on
            return frame
        with self.compute_lock:
            start = time.perf_counter()
            try:
                result = self.process(frame.tensor)
            except Exception as exc:  # noqa: BLE001 - any model failure becomes the request's error
                self.metrics.errors.inc()
                return Frame.error(frame.request_id, f"{self.name}: {type(exc).__name__}: {exc}")
            self.metrics.observe(time.perf_counter() - start)
        return None if result is None else Frame.of_tensor(frame.request_id, result)

    # -- downstream side
    def _send(self) -> None:
        if self.to_gateway:
            return self._send_to_gateways()
        backoff = BACKOFF_START
        while not self.stopping.is_set():
            if self.downstream is None:
                if not self._dial():
                    time.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_START
            try:
                frame = self.outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            sock = self.downstream
            try:
                if sock is None:
                    raise ConnectionError("downstream closed")
                send_frame(sock, frame)  # blocking: a slow downstream throttles us
            except OSError as exc:
                # Not retried: the gateway fails this request (it watches every segment), and a resend could
                # reach a peer that already got the bytes before the connection broke.
                log.warning("%s: dropped request %d, downstream lost: %s", self.name, frame.request_id, exc)
                self._drop(sock)

    def _send_to_gateways(self) -> None:
        """Each result over the results connection of the gateway replica that sent its request."""
        while not self.stopping.is_set():
            try:
                frame = self.outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            with self.lock:
                sock = self.subscribers.get(origin_of(frame.request_id))
            if sock is None:  # that replica is gone (it failed the request when its connection closed)
                log.warning("%s: dropped request %d, no results connection from its gateway", self.name,
                            frame.request_id)
                continue
            try:
                send_frame(sock, frame)  # blocking: a slow gateway throttles us
            except OSError as exc:
                log.warning("%s: dropped request %d, its gateway's results connection broke: %s", self.name,
                            frame.request_id, exc)
                self._unsubscribe(sock)
                sock.close()

    def _dial(self) -> bool:
        host, port = address(self.wiring.downstream)
        try:
            sock = connect(host, port)
            send_frame(sock, Frame.hello(json.dumps(
                {"instance_id": self.wiring.instance_id, "segment": self.wiring.segment,
                 "last": self.wiring.last})))
        except OSError as exc:
            log.debug("%s: downstream %s:%d not reachable: %s", self.name, host, port, exc)
            return False
        log.info("%s: downstream %s:%d connected", self.name, host, port)
        self.downstream = sock
        threading.Thread(target=self._watch, args=(sock,), name="watch", daemon=True).start()
        return True

    def _watch(self, sock: socket.socket) -> None:
        """The downstream never writes to us: any read returning means it closed or reset."""
        try:
            sock.recv(1)
        except OSError:
            pass
        self._drop(sock)

    def _drop(self, sock: socket.socket | None) -> None:
        with self.lock:
            if sock is not None and self.downstream is sock:
                self.downstream = None
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the watcher's recv; close() alone would not
                except OSError:
                    pass
                sock.close()
