"""Requests in, batches out to the instances, results back: the gateway's data path, on one asyncio loop.

Batching: requests wait in one bounded queue; whenever an instance has room (fewer than `window` batches in
flight) the batcher takes the queued requests with the same frame shape, up to `max_batch` frames, into ONE
frame (axis 0 concatenated, in the requests' own datatype; see _payloads), optionally waiting
`max_delay` seconds for more when the batch is not full. Under load the queue fills while the instances are
busy, so batches grow by themselves; at low load a request leaves at once.

Results: every replica dials, per instance, the first segment (requests) and the last one (a results
connection opened with its origin, framing.results_hello); request ids carry that origin, so the last segment
returns each result to the replica that sent it. A batch completes exactly once: it is popped by its result,
an error frame, the failure of its instance (a segment's /healthz fails `health_failures` checks in a row or
reports a new boot id, a connection breaks) or its deadline; frames for popped ids are counted as late and
dropped.

Scale-down: an instance the wiring drops *drains*: it gets no new batch, its batches in flight complete
normally, then its connections close. The operator releases its card pods only once no gateway reports it
(`leaving`, exported as elasticdf_gateway_instance_held), so scaling down fails no request.

Backpressure: a full queue answers 429 at once (RESOURCE_EXHAUSTED over gRPC) instead of queueing without
bound; each request waits at most `timeout` seconds (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from elasticdf_contract.wiring import SegmentWiring
from elasticdf_segment.framing import (
    KIND_ERROR,
    ORIGIN_SHIFT,
    Frame,
    FramingError,
    batch_parts,
    encode_parts,
    read_frame_async,
    results_hello,
    results_origin,
)

log = logging.getLogger("elasticdf.gateway")
SEQ_MASK = (1 << ORIGIN_SHIFT) - 1
FLOAT32 = np.dtype("<f4")
# a segment's /healthz answers in microseconds when idle; on a saturated node it may take a while (`Strikes`,
# and a slow answer from an instance whose results keep arriving is no strike at all)
HEALTH_TIMEOUT = 2.0
SUBSCRIBE_TIMEOUT = 5.0  # for the last segment's echo of the results hello


class RequestFailed(Exception):
    """A request that cannot be answered; `status` is the HTTP status (mapped to a gRPC code by the gRPC side)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def address(endpoint) -> tuple[str, int]:
    return endpoint.host or endpoint.ip, endpoint.port


@dataclass
class Strikes:
    """Consecutive failed health checks of an instance. It leaves the rotation only at `limit` (one slow answer
    from a busy node is not an outage: with the check's timeout and the poll interval, `limit` sets how long
    an instance may be silent); a good check clears them. A broken connection needs no vote."""

    limit: int = 3
    count: int = 0

    def failed(self) -> bool:
        """Count a failed check; True when the instance is to be taken out of rotation."""
        self.count += 1
        return self.count >= self.limit

    def passed(self) -> None:
        self.count = 0


@dataclass
class Instance:
    id: str
    wirings: list[SegmentWiring]
    strikes: Strikes = field(default_factory=Strikes)
    up: bool = False
    reason: str = "not checked yet"
    inflight: int = 0  # batches sent and not completed
    writer: asyncio.StreamWriter | None = None
    results: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    boot_ids: dict[int, str] = field(default_factory=dict)
    delivered: int = 0  # frames read from its results connection
    delivered_at_check: int = 0

    def progressed(self) -> bool:
        """Whether results arrived since the previous call (one call per health check)."""
        progressed, self.delivered_at_check = self.delivered != self.delivered_at_check, self.delivered
        return progressed

    @property
    def entry(self) -> tuple[str, int]:
        return address(self.wirings[0].listen)

    @property
    def exit(self) -> tuple[str, int]:
        return address(self.wirings[-1].listen)


@dataclass
class Job:
    """One request: its frames (the request's own datatype, shape [rows, ...]) and who waits for the result."""

    frames: np.ndarray
    future: asyncio.Future


@dataclass
class Batch:
    instance: Instance
    jobs: list[Job]
    expiry: asyncio.TimerHandle | None = None


def group(wirings: list[SegmentWiring]) -> dict[str, list[SegmentWiring]]:
    """instance id -> its segments in order."""
    groups: dict[str, list[SegmentWiring]] = {}
    for w in wirings:
        groups.setdefault(w.instance_id, []).append(w)
    return {k: sorted(ws, key=lambda w: w.segment) for k, ws in groups.items()}


class Pipeline:
    def __init__(self, wirings: list[SegmentWiring], *, dtype: np.dtype = FLOAT32, health_port: int = 8080,
                 timeout: float = 30.0, poll_seconds: float = 0.5, max_batch: int = 32, max_delay: float = 0.0,
                 max_queue: int = 512, window: int = 4, name: str = "gateway", health_failures: int = 3):
        self.health_failures = health_failures
        self.instances = [self._instance(i, ws) for i, ws in sorted(group(wirings).items())]
        self.leaving: list[Instance] = []  # dropped by the wiring, finishing their batches in flight
        self.dtype = dtype  # what the segments compute on: a batch of mixed request datatypes is cast to it
        self.health_port, self.timeout, self.poll_seconds = health_port, timeout, poll_seconds
        self.max_batch, self.max_delay, self.max_queue, self.window = max_batch, max_delay, max_queue, window
        self.name = name
        # a random origin per replica (and per restart) routes results home and keeps stale frames apart
        self.origin = secrets.randbits(31) | 1
        self.seq = itertools.count(1)
        self.queue: deque[Job] = deque()
        self.queued_frames = 0
        self.work = asyncio.Event()  # a request was queued or an instance got room
        self.recheck = asyncio.Event()  # the wiring added instances: check them now, not at the next poll
        self.batches: dict[int, Batch] = {}
        self.turn = itertools.count()
        self.late_frames = 0
        self.draining = False
        self.tasks: list[asyncio.Task] = []
        self.http: aiohttp.ClientSession | None = None

    def _instance(self, key: str, wirings: list[SegmentWiring]) -> Instance:
        return Instance(key, wirings, Strikes(self.health_failures))

    # -- lifecycle
    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT))
        self.tasks = [asyncio.create_task(self._watch(), name="health"),
                      asyncio.create_task(self._batcher(), name="batcher")]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for inst in self.instances + self.leaving:
            self.fail_instance(inst, "gateway stopping")
        if self.http:
            await self.http.close()

    def ready_instances(self) -> list[Instance]:
        return [i for i in self.instances if i.up]

    @property
    def ready(self) -> bool:
        return bool(self.ready_instances()) and not self.draining

    @property
    def busy(self) -> bool:
        return bool(self.batches or self.queue)

    def update(self, wirings: list[SegmentWiring]) -> tuple[list[str], list[str]]:
        """Swap in new wiring (the operator scaled, or re-planned an instance): unchanged instances keep their
        state and connections; new ones start unchecked (out of rotation until healthy); removed or changed
        ones leave the rotation at once and drain (see `retire`). Returns (added, removed) ids."""
        groups = group(wirings)
        current = {i.id: i for i in self.instances}
        kept, added, removed = [], [], [i for key, i in current.items() if key not in groups]
        for key, ws in sorted(groups.items()):
            old = current.get(key)
            if old is not None and old.wirings == ws:
                kept.append(old)
                continue
            if old is not None:
                removed.append(old)
            added.append(self._instance(key, ws))
            kept.append(added[-1])
        self.instances = kept
        if added:
            self.recheck.set()
        for inst in removed:
            self.retire(inst)
        return [i.id for i in added], [i.id for i in removed]

    def retire(self, inst: Instance) -> None:
        """Out of rotation; its connections stay open until its last batch in flight completes."""
        if inst.inflight == 0:
            self.fail_instance(inst, "removed from the wiring")
            return
        inst.up, inst.reason = False, "removed from the wiring, draining"
        self.leaving.append(inst)
        log.info("instance %s removed from the wiring: draining %d batches in flight", inst.id, inst.inflight)

    def held(self) -> list[tuple[str, str]]:
        """(instance id, state) of every instance this replica still uses or may send to."""
        return ([(i.id, "serving" if i.up else "down") for i in self.instances]
                + [(i.id, "draining") for i in self.leaving])

    # -- health and connections
    async def _watch(self) -> None:
        """Health checks every poll, and at once after the wiring added instances: an activated standby
        instance joins the rotation without waiting out the poll interval."""
        while True:
            self.recheck.clear()
            await asyncio.gather(*(self.check(inst) for inst in list(self.instances)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.recheck.wait(), self.poll_seconds)

    async def _boot_id(self, w: SegmentWiring) -> str:
        url = f"http://{address(w.listen)[0]}:{self.health_port}/healthz"
        async with self.http.get(url) as reply:
            reply.raise_for_status()
            return (await reply.text()).split()[-1]

    async def check(self, inst: Instance) -> None:
        delivering = inst.progressed()
        for w in inst.wirings:
            where = f"segment {w.segment} ({address(w.listen)[0]})"
            try:
                boot = await self._boot_id(w)
            except (TimeoutError, aiohttp.ClientError, OSError, IndexError) as exc:
                if isinstance(exc, TimeoutError) and delivering:  # slow while its results keep arriving: busy
                    inst.strikes.passed()
                    return
                self._strike(inst, f"{where} is down: {str(exc) or type(exc).__name__}")
                return
            previous, inst.boot_ids[w.segment] = inst.boot_ids.get(w.segment), boot
            if previous is not None and previous != boot and inst.up:
                self.fail_instance(inst, f"{where} restarted")
                return
        inst.strikes.passed()
        if not inst.up and inst in self.instances:
            await self._connect(inst)

    def _strike(self, inst: Instance, why: str) -> None:
        if inst.strikes.failed() and (inst.up or inst.reason.startswith("not checked")):
            self.fail_instance(inst, f"{why} ({inst.strikes.count} checks in a row)")
        elif inst.up:
            log.warning("instance %s: %s (check %d of %d before it leaves the rotation)", inst.id, why,
                        inst.strikes.count, inst.strikes.limit)

    async def _connect(self, inst: Instance) -> None:
        """Data connection to the first segment, results connection to the last; in rotation once both stand."""
        try:
            data_reader, inst.writer = await asyncio.open_connection(*inst.entry)
            results_reader, inst.results = await asyncio.open_connection(*inst.exit)
        except OSError as exc:
            self.fail_instance(inst, f"cannot connect to its segments: {exc}")
            return
        inst.results.writelines(encode_parts(results_hello(self.origin, self.name)))
        try:  # the last segment echoes the hello once it routes our origin: only then may requests go
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                echo = await read_frame_async(results_reader)
        except (OSError, FramingError, TimeoutError) as exc:
            echo, why = None, f"{type(exc).__name__}: {exc}"
        else:
            why = "no echo of the results hello"
        if echo is None or results_origin(echo) != self.origin:
            self.fail_instance(inst, f"last segment {inst.exit[0]}:{inst.exit[1]} did not confirm the results "
                                     f"subscription ({why})")
            return
        inst.tasks = [asyncio.create_task(self._read_results(inst, results_reader)),
                      asyncio.create_task(self._watch_data(inst, data_reader))]
        inst.up, inst.reason = True, ""
        self.work.set()
        log.info("instance %s: all %d segments healthy, results connection open", inst.id, len(inst.wirings))

    async def _read_results(self, inst: Instance, reader: asyncio.StreamReader) -> None:
        source = f"{inst.exit[0]}:{inst.exit[1]}"
        try:
            while (frame := await read_frame_async(reader)) is not None:
                inst.delivered += 1
                self.on_frame(frame)
            why = f"last segment ({source}) closed the results connection"
        except (OSError, FramingError) as exc:
            why = f"results connection to {source} broke: {exc}"
        self.fail_instance(inst, why)

    async def _watch_data(self, inst: Instance, reader: asyncio.StreamReader) -> None:
        """The first segment never writes back: its connection ending means the segment went away."""
        try:
            await reader.read(1)
        except OSError:
            pass
        self.fail_instance(inst, f"first segment {inst.entry[0]}:{inst.entry[1]} closed the request connection")

    def fail_instance(self, inst: Instance, reason: str) -> None:
        """Take the instance out of rotation and fail its in-flight requests now (they cannot complete)."""
        was_up = inst.up
        inst.up, inst.reason = False, reason
        if inst in self.leaving:
            self.leaving.remove(inst)
        victims = [rid for rid, b in self.batches.items() if b.instance is inst]
        for rid in victims:
            self._finish(rid, RequestFailed(503, f"instance {inst.id}: {reason}; request {rid} was not completed"))
        try:
            current = asyncio.current_task()  # a results reader failing its own instance must not cancel itself
        except RuntimeError:  # no running loop: a wiring update before the gateway serves
            current = None
        for task in inst.tasks:
            if task is not current:
                task.cancel()
        for writer in (inst.writer, inst.results):
            if writer is not None:
                writer.close()
        inst.tasks, inst.writer, inst.results = [], None, None
        if was_up or victims:
            log.warning("instance %s out of rotation: %s (%d in-flight batches failed)", inst.id, reason,
                        len(victims))

    # -- requests
    async def infer(self, frames: np.ndarray) -> np.ndarray:
        """The model's output for `frames` (shape [rows, ...], any datatype that converts exactly)."""
        if not self.ready_instances():
            reasons = "; ".join(f"{i.id}: {i.reason}" for i in self.instances) or "no instances configured"
            raise RequestFailed(503, f"no ready pipeline instance ({reasons})")
        if self.queued_frames + len(frames) > self.max_queue:
            raise RequestFailed(429, f"all {len(self.ready_instances())} instance(s) are saturated: "
                                     f"{self.queued_frames} frames already queued (limit {self.max_queue}); "
                                     "retry later or scale the ElasticInference up")
        loop = asyncio.get_running_loop()
        job = Job(frames, loop.create_future())
        self.queue.append(job)
        self.queued_frames += len(frames)
        self.work.set()
        # a plain timer on the future: cheaper per request than asyncio.timeout's cancel-and-convert machinery
        timer = loop.call_later(self.timeout, self._time_out, job)
        try:
            return await job.future
        finally:
            timer.cancel()

    def _time_out(self, job: Job) -> None:
        if not job.future.done():
            job.future.set_exception(RequestFailed(504, f"no result within {self.timeout:g} s"))

    def _free_instance(self) -> Instance | None:
        ready = [i for i in self.ready_instances() if i.inflight < self.window]
        if not ready:
            return None
        offset = next(self.turn) % len(ready)  # round robin among the least busy
        return min(ready[offset:] + ready[:offset], key=lambda i: i.inflight)

    async def _batcher(self) -> None:
        while True:
            await self.work.wait()
            self.work.clear()
            while self.queue:
                if not self.ready_instances():
                    self._fail_queue()
                    break
                inst = self._free_instance()
                if inst is None:
                    break  # woken again when a batch completes
                if self.max_delay and self.queued_frames < self.max_batch:
                    await asyncio.sleep(self.max_delay)
                    if not inst.up:
                        continue
                jobs = self._take()
                if jobs:
                    await self._send(inst, jobs)

    def _fail_queue(self) -> None:
        reasons = "; ".join(f"{i.id}: {i.reason}" for i in self.instances) or "no instances configured"
        while self.queue:
            job = self.queue.popleft()
            self.queued_frames -= len(job.frames)
            if not job.future.done():
                job.future.set_exception(RequestFailed(503, f"no ready pipeline instance ({reasons})"))

    def _take(self) -> list[Job]:
        """Queued requests of the same frame shape, up to max_batch frames (always at least one request)."""
        jobs: list[Job] = []
        rows = 0
        shape = self.queue[0].frames.shape[1:]
        while self.queue:
            job = self.queue[0]
            if job.future.done():  # timed out while queued
                self.queue.popleft()
                self.queued_frames -= len(job.frames)
                continue
            if jobs and (job.frames.shape[1:] != shape or rows + len(job.frames) > self.max_batch):
                break
            self.queue.popleft()
            self.queued_frames -= len(job.frames)
            jobs.append(job)
            rows += len(job.frames)
        return jobs

    def _payloads(self, jobs: list[Job]) -> list[np.ndarray]:
        """Every job's frames, to travel as one frame (see framing.batch_parts: no concatenation copy). Requests of
        one datatype keep it (a 224x224 UINT8 image is a quarter of its FP32 bytes, and the segment casts to its
        model's input as it computes); in a batch of mixed datatypes each request is cast to the model's."""
        first = jobs[0].frames.dtype
        if all(j.frames.dtype == first for j in jobs):
            return [j.frames for j in jobs]
        return [j.frames.astype(self.dtype, copy=False) for j in jobs]  # exactness checked on entry

    async def _send(self, inst: Instance, jobs: list[Job]) -> None:
        rid = (self.origin << ORIGIN_SHIFT) | (next(self.seq) & SEQ_MASK)
        batch = Batch(inst, jobs)
        batch.expiry = asyncio.get_running_loop().call_later(self.timeout, self._expire, rid)
        self.batches[rid] = batch
        inst.inflight += 1
        writer = inst.writer
        try:
            writer.writelines(batch_parts(rid, self._payloads(jobs)))  # one writev per batch
            await writer.drain()  # a full pipeline slows the batcher down (TCP backpressure)
        except (OSError, AttributeError) as exc:
            self.fail_instance(inst, f"first segment {inst.entry[0]}:{inst.entry[1]} unreachable: {exc}")

    def _expire(self, rid: int) -> None:
        batch = self.batches.get(rid)
        if batch is not None:
            self._finish(rid, RequestFailed(504, f"instance {batch.instance.id}: no result for request {rid} "
                                                 f"within {self.timeout:g} s"))

    def _finish(self, rid: int, outcome: np.ndarray | RequestFailed) -> None:
        batch = self.batches.pop(rid)
        batch.expiry.cancel()
        inst = batch.instance
        inst.inflight -= 1
        if inst.inflight == 0 and inst in self.leaving:
            self.fail_instance(inst, "removed from the wiring, drained")
            log.info("instance %s drained: connections closed", inst.id)
        self.work.set()
        at = 0
        for job in batch.jobs:
            rows = len(job.frames)
            if not job.future.done():
                if isinstance(outcome, RequestFailed):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome[at:at + rows])
            at += rows

    def on_frame(self, frame: Frame) -> None:
        """A frame from a last segment."""
        if frame.request_id not in self.batches:
            self.late_frames += 1
            return
        if frame.kind == KIND_ERROR:
            outcome = RequestFailed(500, f"request {frame.request_id} failed in {frame.message}")
        elif frame.tensor is None or len(frame.tensor) != sum(len(j.frames) for j in
                                                               self.batches[frame.request_id].jobs):
            outcome = RequestFailed(500, f"request {frame.request_id}: the result does not have one row per frame "
                                         f"(shape {None if frame.tensor is None else frame.tensor.shape})")
        else:
            outcome = frame.tensor
        self._finish(frame.request_id, outcome)
