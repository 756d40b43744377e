"""Gateway bookkeeping without sockets: each request completes exactly once, failures are explicit."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from elasticdf_contract.wiring import Endpoint, SegmentWiring
from elasticdf_gateway.pipeline import Pipeline, RequestFailed
from elasticdf_gateway.server import to_array, to_tensor
from elasticdf_segment.framing import Frame


def wirings(instance: int) -> list[SegmentWiring]:
    gw = Endpoint(kind="gateway", host="gw", port=8000)
    pods = [Endpoint(kind="pod", host=f"p{instance}-{s}", port=7000) for s in range(2)]
    return [SegmentWiring(instance_id=f"ns/m-{instance}", instance=instance, segment=s, segments=2,
                          mode="emulation", model="m", node="n", card=s, card_type="u280", slrs=[0],
                          layer_range=[s, s], layers=["a", "a"], listen=pods[s], upstream=pods[0] if s else gw,
                          downstream=gw if s else pods[1]) for s in range(2)]


def pipeline_with_fake_send(sent: list) -> Pipeline:
    p = Pipeline(wirings(0) + wirings(1), timeout=5)
    for inst in p.instances:
        inst.up = True
    p._send = lambda inst, frame: sent.append((inst, frame))
    return p


def run(p: Pipeline, tensor) -> dict:
    box: dict = {}

    def call():
        try:
            box["result"] = p.infer(tensor)
        except RequestFailed as exc:
            box["error"] = exc
    thread = threading.Thread(target=call)
    thread.start()
    return {"thread": thread, "box": box}


def wait_sent(sent, n):
    import time
    while len(sent) < n:
        time.sleep(0.001)


def test_result_completes_once_and_late_frames_are_dropped():
    sent: list = []
    p = pipeline_with_fake_send(sent)
    call = run(p, np.ones(3, np.float32))
    wait_sent(sent, 1)
    rid = sent[0][1].request_id
    p.on_frame(Frame.of_tensor(rid, np.full(3, 7.0, np.float32)), "test")
    p.on_frame(Frame.of_tensor(rid, np.full(3, 8.0, np.float32)), "test")  # duplicate: ignored
    call["thread"].join(5)
    assert call["box"]["result"][0] == rid and call["box"]["result"][1][0] == 7.0
    assert p.late_frames == 1


def test_requests_spread_over_instances_and_a_dead_instance_fails_its_requests():
    sent: list = []
    p = pipeline_with_fake_send(sent)
    calls = [run(p, np.ones(1, np.float32)) for _ in range(2)]
    wait_sent(sent, 2)
    assert {inst.id for inst, _ in sent} == {"ns/m-0", "ns/m-1"}  # least outstanding
    dead = sent[0][0]
    p.fail_instance(dead, "segment 1 (p-1) is down: refused")
    p.on_frame(Frame.of_tensor(sent[1][1].request_id, np.zeros(1, np.float32)), "test")
    for c in calls:
        c["thread"].join(5)
    errors = [c["box"].get("error") for c in calls if "error" in c["box"]]
    assert len(errors) == 1 and errors[0].status == 503 and "segment 1 (p-1) is down" in str(errors[0])
    assert "not completed" in str(errors[0])


def test_no_ready_instance_and_error_frames():
    sent: list = []
    p = pipeline_with_fake_send(sent)
    call = run(p, np.ones(1, np.float32))
    wait_sent(sent, 1)
    p.on_frame(Frame.error(sent[0][1].request_id, "ns/m-0 segment 1: RuntimeError: bad input"), "test")
    call["thread"].join(5)
    assert call["box"]["error"].status == 500 and "RuntimeError" in str(call["box"]["error"])
    for inst in p.instances:
        inst.up, inst.reason = False, "segment 0 down"
    with pytest.raises(RequestFailed, match="no ready pipeline instance"):
        p.infer(np.ones(1, np.float32))


def test_v2_tensor_conversion():
    array = to_array({"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [1, -2]})
    assert array.dtype == np.int8 and array.shape == (1, 2)
    assert to_tensor("y", array) == {"name": "y", "shape": [1, 2], "datatype": "INT8", "data": [1, -2]}
    with pytest.raises(RequestFailed, match="datatype"):
        to_array({"name": "x", "shape": [1], "data": [1]})
