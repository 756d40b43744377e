"""Request bookkeeping between the REST front and the instances' segments.

Every request gets a u64 id and a Pending entry; it is sent to the first segment of the least busy healthy
instance and completed by the frame with the same id that the last segment returns. A request completes
exactly once: the entry is popped by whichever comes first — its result, an error frame, the failure of its
instance (a segment's /healthz stops answering or reports a new boot id, the connection breaks) or its
deadline. Frames arriving for popped ids are counted as late and dropped, never answered twice.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np
from elasticdf_partitioner.wiring import SegmentWiring
from elasticdf_segment.framing import KIND_ERROR, KIND_HELLO, Frame, connect, encode

log = logging.getLogger("elasticdf.gateway")


class RequestFailed(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Instance:
    id: str
    wirings: list[SegmentWiring]
    health_port: int
    up: bool = False
    reason: str = "not checked yet"
    outstanding: int = 0
    sock: socket.socket | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    boot_ids: dict[int, str] = field(default_factory=dict)

    @property
    def entry(self) -> tuple[str, int]:
        first = self.wirings[0].listen
        return first.host or first.ip, first.port

    def health_url(self, w: SegmentWiring) -> str:
        return f"http://{w.listen.host or w.listen.ip}:{self.health_port}/healthz"


@dataclass
class Pending:
    instance: Instance
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: RequestFailed | None = None


def group(wirings: list[SegmentWiring]) -> dict[str, list[SegmentWiring]]:
    """instance id -> its segments in order."""
    groups: dict[str, list[SegmentWiring]] = {}
    for w in wirings:
        groups.setdefault(w.instance_id, []).append(w)
    return {k: sorted(ws, key=lambda w: w.segment) for k, ws in groups.items()}


class Pipeline:
    def __init__(self, wirings: list[SegmentWiring], health_port: int = 8080, timeout: float = 30.0,
                 poll_seconds: float = 0.2):
        self.health_port = health_port
        self.instances = [Instance(i, ws, health_port) for i, ws in sorted(group(wirings).items())]
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.pending: dict[int, Pending] = {}
        self.lock = threading.Lock()
        # a random high half keeps ids of a restarted gateway apart from stale frames still in flight
        self.ids = itertools.count((secrets.randbits(31) << 32) + 1)
        self.turn = itertools.count()
        self.late_frames = 0

    def update(self, wirings: list[SegmentWiring]) -> tuple[list[str], list[str]]:
        """Swap in new wiring (the operator scaled, or re-planned an instance): unchanged instances keep their
        state and connections; new ones start unchecked (out of rotation until healthy); removed or changed
        ones leave rotation and their in-flight requests fail with 503. Returns (added, removed) ids."""
        groups = group(wirings)
        with self.lock:
            current = {i.id: i for i in self.instances}
            kept, added, removed = [], [], [i for key, i in current.items() if key not in groups]
            for key, ws in sorted(groups.items()):
                old = current.get(key)
                if old is not None and old.wirings == ws:
                    kept.append(old)
                    continue
                if old is not None:
                    removed.append(old)
                added.append(Instance(key, ws, self.health_port))
                kept.append(added[-1])
            self.instances = kept
        for inst in removed:
            self.fail_instance(inst, "removed from the wiring")
        return [i.id for i in added], [i.id for i in removed]

    # -- health
    def start(self) -> None:
        threading.Thread(target=self._watch, name="health", daemon=True).start()

    def ready_instances(self) -> list[Instance]:
        return [i for i in self.instances if i.up]

    def _watch(self) -> None:
        while True:
            for inst in list(self.instances):
                self.check(inst)
            time.sleep(self.poll_seconds)

    def check(self, inst: Instance) -> None:
        for w in inst.wirings:
            try:
                with urllib.request.urlopen(inst.health_url(w), timeout=max(self.poll_seconds, 0.5)) as reply:
                    boot = reply.read().decode().split()[-1]
            except OSError as exc:
                if inst.up or inst.reason.startswith("not checked"):
                    self.fail_instance(inst, f"segment {w.segment} ({w.listen.host or w.listen.ip}) is down: "
                                             f"{getattr(exc, 'reason', exc)}")
                return
            previous = inst.boot_ids.get(w.segment)
            inst.boot_ids[w.segment] = boot
            if previous is not None and previous != boot and inst.up:
                self.fail_instance(inst, f"segment {w.segment} ({w.listen.host or w.listen.ip}) restarted")
                return
        if not inst.up:
            log.info("instance %s: all %d segments healthy", inst.id, len(inst.wirings))
            inst.up, inst.reason = True, ""

    def fail_instance(self, inst: Instance, reason: str) -> None:
        """Take the instance out of rotation and fail its in-flight requests now (they cannot complete)."""
        with self.lock:
            inst.up, inst.reason = False, reason
            victims = [rid for rid, p in self.pending.items() if p.instance is inst]
            for rid in victims:
                p = self.pending.pop(rid)
                p.error = RequestFailed(503, f"instance {inst.id}: {reason}; request {rid} was not completed")
                p.done.set()
            sock, inst.sock = inst.sock, None
        if sock:
            sock.close()
        if victims or reason:
            log.warning("instance %s out of rotation: %s (%d in-flight requests failed)", inst.id, reason,
                        len(victims))

    # -- requests
    def _choose(self) -> Instance:
        ready = self.ready_instances()
        if not ready:
            reasons = "; ".join(f"{i.id}: {i.reason}" for i in self.instances) or "no instances configured"
            raise RequestFailed(503, f"no ready pipeline instance ({reasons})")
        offset = next(self.turn)  # round robin among the least busy
        ready = ready[offset % len(ready):] + ready[:offset % len(ready)]
        return min(ready, key=lambda i: i.outstanding)

    def infer(self, tensor: np.ndarray) -> tuple[int, np.ndarray]:
        with self.lock:
            inst = self._choose()
            rid = next(self.ids)
            pending = self.pending[rid] = Pending(inst)
            inst.outstanding += 1
        try:
            self._send(inst, Frame.of_tensor(rid, tensor))
            if not pending.done.wait(self.timeout):
                with self.lock:
                    if self.pending.pop(rid, None) is pending:
                        pending.error = RequestFailed(504, f"instance {inst.id}: no result for request {rid} "
                                                           f"within {self.timeout:.0f} s")
            if pending.error:
                raise pending.error
            return rid, pending.result
        finally:
            with self.lock:
                inst.outstanding -= 1
                self.pending.pop(rid, None)

    def _send(self, inst: Instance, frame: Frame) -> None:
        with inst.send_lock:
            try:
                if inst.sock is None:
                    inst.sock = connect(*inst.entry)
                inst.sock.sendall(encode(frame))  # blocking: a full pipeline slows the callers down
            except OSError as exc:
                self.fail_instance(inst, f"first segment {inst.entry[0]}:{inst.entry[1]} unreachable: {exc}")

    def on_frame(self, frame: Frame, source: str) -> None:
        """A frame from a last segment."""
        with self.lock:
            pending = self.pending.pop(frame.request_id, None)
            if pending is None:
                self.late_frames += 1
                return
        if frame.kind == KIND_ERROR:
            pending.error = RequestFailed(500, f"request {frame.request_id} failed in {frame.message}")
        else:
            pending.result = frame.tensor
        pending.done.set()

    def on_results_closed(self, hello: Frame | None, source: str) -> None:
        who = json.loads(hello.message).get("instance_id") if hello and hello.kind == KIND_HELLO else None
        for inst in self.instances:
            if inst.id == who and inst.up:
                self.fail_instance(inst, f"last segment ({source}) closed its connection")
