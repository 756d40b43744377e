"""Gateway bookkeeping without segments: each batch completes exactly once, failures are explicit, batches are
split back into their requests. Frames go to a real TCP listener that plays the first segment."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from elasticdf_contract.wiring import Endpoint, SegmentWiring
from elasticdf_gateway.pipeline import Pipeline, RequestFailed, Strikes
from elasticdf_segment.framing import KIND_HELLO, Frame, encode_parts, read_frame_async


def wirings(instance: int, port: int) -> list[SegmentWiring]:
    gw = Endpoint(kind="gateway", host="gw", port=8000)
    pod = Endpoint(kind="pod", host="127.0.0.1", port=port)
    return [SegmentWiring(instance_id=f"ns/m-{instance}", instance=instance, segment=0, segments=1,
                          mode="emulation", model="m", node="n", card=0, card_type="u280", slrs=[0],
                          layer_range=[0, 0], layers=["a", "a"], listen=pod, upstream=gw, downstream=gw)]


async def connected_pipeline(**options):
    """A pipeline whose one instance is a listener collecting the frames it receives."""
    received: asyncio.Queue = asyncio.Queue()

    async def segment(reader, writer):
        while (frame := await read_frame_async(reader)) is not None:
            if frame.kind == KIND_HELLO:  # as a last segment acknowledges a results subscription
                writer.writelines(encode_parts(frame))
            await received.put(frame)

    server = await asyncio.start_server(segment, "127.0.0.1", 0)
    p = Pipeline(wirings(0, server.sockets[0].getsockname()[1]), **options)
    p.tasks = [asyncio.create_task(p._batcher())]
    await p._connect(p.instances[0])
    return p, received, server


async def tensor_frame(received):
    while (frame := await received.get()).tensor is None:  # skip the results hello
        pass
    return frame


def test_batches_split_back_and_late_frames_are_dropped():
    async def run():
        p, received, server = await connected_pipeline(max_batch=8)
        calls = [asyncio.create_task(p.infer(np.full((n, 2), n, np.float32))) for n in (1, 2)]
        frame = await tensor_frame(received)
        assert frame.tensor.shape == (3, 2)  # both requests in one batch frame
        p.on_frame(Frame.of_tensor(frame.request_id, frame.tensor * 10))
        p.on_frame(Frame.of_tensor(frame.request_id, frame.tensor))  # duplicate: ignored
        one, two = await asyncio.gather(*calls)
        assert one.tolist() == [[10, 10]] and two.tolist() == [[20, 20], [20, 20]]
        assert p.late_frames == 1 and p.instances[0].inflight == 0
        await p.stop()
        server.close()
    asyncio.run(run())


def test_error_frames_failed_instances_and_no_ready_instance():
    async def run():
        p, received, server = await connected_pipeline(max_batch=1)
        call = asyncio.create_task(p.infer(np.ones((1, 2), np.float32)))
        frame = await tensor_frame(received)
        p.on_frame(Frame.error(frame.request_id, "ns/m-0 segment 1: RuntimeError: bad input"))
        with pytest.raises(RequestFailed, match="RuntimeError") as err:
            await call
        assert err.value.status == 500
        call = asyncio.create_task(p.infer(np.ones((1, 2), np.float32)))
        await tensor_frame(received)
        p.fail_instance(p.instances[0], "segment 0 (p-0) is down: refused")
        with pytest.raises(RequestFailed, match="is down.*not completed") as err:
            await call
        assert err.value.status == 503
        with pytest.raises(RequestFailed, match="no ready pipeline instance"):
            await p.infer(np.ones((1, 2), np.float32))
        await p.stop()
        server.close()
    asyncio.run(run())


def test_a_lost_result_times_out_and_frees_its_slot():
    async def run():
        p, received, server = await connected_pipeline(timeout=0.2, window=1)
        with pytest.raises(RequestFailed, match="no result within") as err:
            await p.infer(np.ones((1, 2), np.float32))
        assert err.value.status == 504
        await asyncio.sleep(0.05)
        assert p.instances[0].inflight == 0 and not p.batches
        await p.stop()
        server.close()
    asyncio.run(run())


def test_an_instance_the_wiring_drops_finishes_its_batches_and_gets_no_new_ones():
    async def run():
        p, received, server = await connected_pipeline(max_batch=1)
        old = p.instances[0]
        call = asyncio.create_task(p.infer(np.ones((1, 2), np.float32)))
        frame = await tensor_frame(received)
        added, removed = p.update(wirings(1, 9))  # scaled down to another instance (not healthy yet)
        assert (added, removed) == (["ns/m-1"], ["ns/m-0"])
        assert ("ns/m-0", "draining") in p.held() and old.writer is not None, "connections stay while in flight"
        with pytest.raises(RequestFailed, match="no ready pipeline instance") as err:
            await p.infer(np.ones((1, 2), np.float32))  # new work never goes to the draining instance
        assert err.value.status == 503
        p.on_frame(Frame.of_tensor(frame.request_id, frame.tensor * 3))
        assert (await call).tolist() == [[3, 3]], "the request in flight completes normally"
        assert p.held() == [("ns/m-1", "down")] and old.writer is None, "drained: closed and no longer held"
        assert p.update([]) == ([], ["ns/m-1"]) and p.held() == [], "nothing in flight: dropped at once"
        await p.stop()
        server.close()
    asyncio.run(run())


async def health_endpoint(healthz) -> tuple[web.AppRunner, int]:
    """A segment's /healthz on loopback answered by `healthz`; (its runner, to clean up, and its port)."""
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def test_one_slow_health_check_keeps_an_instance_several_drop_it_and_it_comes_back():
    async def run():
        answer = {"status": 200}

        async def healthz(_):
            return web.Response(status=answer["status"], text="ok boot-1")

        runner, port = await health_endpoint(healthz)
        p, received, server = await connected_pipeline(health_port=port, health_failures=3)
        p.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        inst = p.instances[0]
        await p.check(inst)
        assert inst.up
        answer["status"] = 503
        for _ in range(2):
            await p.check(inst)
            assert inst.up, "fewer failed checks in a row than the limit: still in rotation"
        answer["status"] = 200
        await p.check(inst)
        answer["status"] = 503
        for _ in range(2):
            await p.check(inst)
        assert inst.up, "a good check in between starts the count again"
        await p.check(inst)
        assert not inst.up and "3 checks in a row" in inst.reason
        answer["status"] = 200
        await p.check(inst)
        assert inst.up and inst.writer is not None, "healthy again: reconnected, back in rotation"
        await p.stop()
        server.close()
        await runner.cleanup()
    asyncio.run(run())


def test_a_slow_health_answer_is_no_strike_while_the_instance_delivers_results():
    async def run():
        async def healthz(_):
            await asyncio.sleep(1.0)  # a card pod too busy to answer within the check's timeout
            return web.Response(text="ok boot-1")

        runner, port = await health_endpoint(healthz)
        p, received, server = await connected_pipeline(health_port=port, health_failures=2)
        p.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.1))
        inst = p.instances[0]
        for _ in range(4):
            inst.delivered += 1  # a result arrived from its last segment since the previous check
            await p.check(inst)
            assert inst.up, "slow but delivering: stays in rotation"
        await p.check(inst)  # no result since the previous check: a strike
        assert inst.up
        await p.check(inst)
        assert not inst.up and "TimeoutError (2 checks in a row)" in inst.reason, "slow and silent: out"
        await p.stop()
        server.close()
        await runner.cleanup()
    asyncio.run(run())


def test_an_instance_the_wiring_adds_is_checked_at_once_not_at_the_next_poll():
    """Activating a standby instance: the health watcher polls every minute here, yet the added instance joins the
    rotation as soon as its check passes."""
    async def run():
        async def healthz(_):
            return web.Response(text="ok boot-1")

        runner, health_port = await health_endpoint(healthz)
        p, received, server = await connected_pipeline(health_port=health_port, poll_seconds=60.0)
        await p.start()
        data_port = server.sockets[0].getsockname()[1]
        await asyncio.sleep(0.2)  # the watcher's first round is done: it now waits out its poll interval
        added, _ = p.update(wirings(0, data_port) + [w.model_copy(update={"instance_id": "ns/m-1", "instance": 1})
                                                     for w in wirings(1, data_port)])
        assert added == ["ns/m-1"] and not p.instances[1].up
        async with asyncio.timeout(10):
            while not p.instances[1].up:
                await asyncio.sleep(0.02)
        await p.stop()
        server.close()
        await runner.cleanup()
    asyncio.run(run())


def test_strikes_count_consecutive_failures_only():
    s = Strikes(limit=3)
    assert [s.failed(), s.failed()] == [False, False]
    s.passed()
    assert [s.failed(), s.failed(), s.failed()] == [False, False, True]
