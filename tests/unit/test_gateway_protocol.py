"""The Open Inference Protocol's own clients, unmodified and with their defaults (tritonclient HTTP and gRPC, the
KServe Python client's v2 REST and gRPC) against two gateway replicas in front of real emulated segment processes on
loopback: health, metadata, inference (JSON, binary, gRPC), outputs selection, datatypes, and every bad input."""

from __future__ import annotations

import http.client
import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from elasticdf_segment import testmodels
from gateway_stack import MODEL, Stack
from kserve_check import check_kserve_client
from tritonclient.utils import InferenceServerException

RANGES = [[0, 1], [2, 5]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    model = testmodels.plain_cnn(seed=3)
    with Stack(tmp_path_factory.mktemp("gw"), model, RANGES) as st:
        st.start_segments()
        st.start_gateway("gw0")
        st.start_gateway("gw1", "--max-body-bytes", "65536")
        st.wait_ready("gw0")
        st.wait_ready("gw1")
        st.reference = ort.InferenceSession(model.SerializeToString())
        yield st


def expected(stack, frames):
    """The unsplit model, one frame at a time (its batch axis is fixed to 1)."""
    return np.concatenate([stack.reference.run(None, {"x": f[None].astype(np.float32)})[0] for f in frames])


def frame(seed=1):
    return testmodels.random_frames(1, seed=seed)[0]


def test_tritonclient_http_health_metadata_and_binary_infer(stack):
    client = thttp.InferenceServerClient(stack.url())
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    out = meta["outputs"][0]["name"]
    x = frame()
    inp = thttp.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # default: binary
    result = client.infer(MODEL, [inp], request_id="r-7")
    assert result.get_response()["id"] == "r-7"
    assert np.array_equal(result.as_numpy(out), expected(stack, x))


def test_tritonclient_http_json_and_outputs_selection(stack):
    client = thttp.InferenceServerClient(stack.url("gw1"))
    out = client.get_model_metadata(MODEL)["outputs"][0]["name"]
    x = np.concatenate([frame(2), frame(3)])  # two frames in one request
    inp = thttp.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    result = client.infer(MODEL, [inp], outputs=[thttp.InferRequestedOutput(out, binary_data=False)])
    assert "data" in result.get_response()["outputs"][0]
    assert np.array_equal(result.as_numpy(out), expected(stack, x))
    with pytest.raises(InferenceServerException, match="unknown output 'nope'"):
        client.infer(MODEL, [inp], outputs=[thttp.InferRequestedOutput("nope")])


@pytest.mark.parametrize("datatype", ["UINT8", "INT8", "FP16", "INT32", "INT64", "FP64"])
def test_datatypes_convert_exactly(stack, datatype):
    from tritonclient.utils import triton_to_np_dtype

    client = thttp.InferenceServerClient(stack.url())
    x = frame(4)
    inp = thttp.InferInput("x", list(x.shape), datatype)
    inp.set_data_from_numpy(x.astype(triton_to_np_dtype(datatype)))
    out = client.get_model_metadata(MODEL)["outputs"][0]["name"]
    assert np.array_equal(client.infer(MODEL, [inp]).as_numpy(out), expected(stack, x))


def test_tritonclient_grpc(stack):
    client = tgrpc.InferenceServerClient(stack.grpc_url())
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta.inputs[0].name == "x" and list(meta.inputs[0].shape) == [-1, 3, 16, 16]
    out = meta.outputs[0].name
    for datatype, dtype in (("FP32", np.float32), ("UINT8", np.uint8)):
        x = frame(5)
        inp = tgrpc.InferInput("x", list(x.shape), datatype)
        inp.set_data_from_numpy(x.astype(dtype))
        result = client.infer(MODEL, [inp], request_id="g-1")
        assert result.get_response().id == "g-1"
        assert np.array_equal(result.as_numpy(out), expected(stack, x))


def test_grpc_errors_name_the_problem(stack):
    client = tgrpc.InferenceServerClient(stack.grpc_url("gw1"))
    x = frame()
    cases = [("other", "x", list(x.shape), "FP32", x, "NOT_FOUND", "unknown model 'other'"),
             (MODEL, "x", [1, 3, 8, 8], "FP32", x[:, :, :8, :8], "INVALID_ARGUMENT", "does not match the model input"),
             (MODEL, "x", list(x.shape), "INT32", (x.astype(np.int32) << 24) + 1, "INVALID_ARGUMENT",
              "cannot hold exactly"),
             (MODEL, "y", list(x.shape), "FP32", x, "INVALID_ARGUMENT", "unknown input 'y'")]
    for model, name, shape, datatype, data, code, message in cases:
        inp = tgrpc.InferInput(name, shape, datatype)
        inp.set_data_from_numpy(data)
        with pytest.raises(InferenceServerException, match=message) as err:
            client.infer(model, [inp])
        assert code in err.value.status()
    big = np.zeros((1, 3, 100, 100), np.float32)  # 120 kB > gw1's 64 kB limit
    inp = tgrpc.InferInput("x", list(big.shape), "FP32")
    inp.set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as err:
        client.infer(MODEL, [inp])
    assert "RESOURCE_EXHAUSTED" in err.value.status()
    assert client.is_server_ready()  # the server is unharmed


def test_kserve_client_rest_and_grpc(stack):
    x = np.concatenate([frame(6), frame(7)])
    reply = check_kserve_client(f"http://{stack.url()}", stack.grpc_url("gw1"), MODEL, x, expected(stack, x))
    assert "unknown model 'other'" in reply["grpc"]["unknown_model"]["message"]


BAD = {
    "wrong shape": ({"inputs": [{"name": "x", "shape": [1, 3, 4], "datatype": "FP32", "data": [0] * 12}]},
                    None, 400, "does not match the model input"),
    "wrong datatype": ({"inputs": [{"name": "x", "shape": [1, 3, 16, 16], "datatype": "FLOAT", "data": [0] * 768}]},
                       None, 400, "unknown datatype 'FLOAT'"),
    "bytes datatype": ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
                       None, 400, "BYTES is not supported"),
    "too few values": ({"inputs": [{"name": "x", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [1, 2]}]},
                       None, 400, "2 values, but shape"),
    "truncated binary": ({"inputs": [{"name": "x", "shape": [1, 3, 16, 16], "datatype": "FP32",
                                      "parameters": {"binary_data_size": 3072}}]}, b"\0" * 1000, 400,
                         "truncated payload"),
    "unknown output": ({"inputs": [{"name": "x", "shape": [1, 3, 16, 16], "datatype": "UINT8", "data": [0] * 768}],
                        "outputs": [{"name": "zz"}]}, None, 400, "unknown output 'zz'"),
    "malformed json": (b'{"inputs": [', None, 400, "request JSON is malformed"),
    "not utf-8": (b"\xff\xfe{", None, 400, "request JSON is malformed"),
}


def test_every_bad_input_is_a_protocol_error_and_the_connection_survives(stack):
    conn = http.client.HTTPConnection(*stack.url("gw1").split(":"), timeout=10)  # one keep-alive connection
    for case, (body, binary, status, message) in BAD.items():
        head = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
        if binary is not None:
            headers["Inference-Header-Content-Length"] = str(len(head))
        conn.request("POST", f"/v2/models/{MODEL}/infer", head + (binary or b""), headers)
        reply = conn.getresponse()
        error = json.loads(reply.read())["error"]
        assert (reply.status, message in error) == (status, True), (case, reply.status, error)
    for path, status in (("/v2/models/other/infer", 404), ("/v2/models/testnet/versions/9/infer", 404)):
        conn.request("POST", path, b"{}")
        reply = conn.getresponse()
        assert reply.status == status and "error" in json.loads(reply.read())
    conn.request("GET", "/v2")  # and the same connection still serves
    assert conn.getresponse().status == 200


def test_an_oversized_body_is_413_and_the_server_serves_on(stack):
    """The one case that ends the connection after the reply: the unread rest of the body cannot be skipped."""
    conn = http.client.HTTPConnection(*stack.url("gw1").split(":"), timeout=10)
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 3, 16, 16], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 100000}}]}).encode()
    conn.request("POST", f"/v2/models/{MODEL}/infer", head + b"\0" * 100000,
                 {"Inference-Header-Content-Length": str(len(head))})
    reply = conn.getresponse()
    assert reply.status == 413 and "larger than 65536 bytes" in json.loads(reply.read())["error"]
    assert thttp.InferenceServerClient(stack.url("gw1")).is_server_ready()


def test_a_chunked_body_without_content_length_is_read_in_full(stack):
    """Bodies with a Content-Length are received into one buffer of that size; a chunked one takes aiohttp's
    read(), and both give the same answer."""
    conn = http.client.HTTPConnection(*stack.url().split(":"), timeout=10)
    x = frame(4)
    head = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    data = x.tobytes()
    conn.request("POST", f"/v2/models/{MODEL}/infer", iter([head, data[:1000], data[1000:]]),
                 {"Inference-Header-Content-Length": str(len(head))}, encode_chunked=True)
    reply = conn.getresponse()
    body = reply.read()
    assert reply.status == 200, body
    size = int(reply.getheader("Inference-Header-Content-Length"))
    result = np.frombuffer(body[size:], np.float32).reshape(json.loads(body[:size])["outputs"][0]["shape"])
    assert np.array_equal(result, expected(stack, x))


def test_two_replicas_each_get_their_own_results(stack):
    """Both replicas share the instance; results return to the replica that sent the request (origin)."""
    out = thttp.InferenceServerClient(stack.url()).get_model_metadata(MODEL)["outputs"][0]["name"]
    frames = testmodels.random_frames(64, seed=9)

    def one(i):
        inp = thttp.InferInput("x", list(frames[i].shape), "FP32")
        inp.set_data_from_numpy(frames[i])
        client = thttp.InferenceServerClient(stack.url("gw0" if i % 2 else "gw1"))  # not shareable across threads
        return client.infer(MODEL, [inp]).as_numpy(out)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(len(frames))))
    for got, x in zip(results, frames):
        assert np.array_equal(got, expected(stack, x))


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """A model of ~10 ms per frame, one in-flight frame per gateway, two queued at most: saturates at once."""
    model = testmodels.plain_cnn(seed=5, channels=32, size=64)
    with Stack(tmp_path_factory.mktemp("slow"), model, [[0, 5]],
               gateway_args=("--window", "1", "--max-batch", "1", "--max-queue", "2")) as st:
        st.start_segments()
        st.start_gateway("gw0")
        st.wait_ready("gw0")
        yield st


def post(url: str, x: np.ndarray) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*url.split(":"), timeout=30)
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]})
    conn.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    return reply.status, json.loads(reply.read())


def test_saturation_answers_429_with_a_reason(slow):
    x = testmodels.random_frames(1, size=64)[0]
    with ThreadPoolExecutor(24) as pool:
        replies = list(pool.map(lambda _: post(slow.url(), x), range(24)))
    codes = [status for status, _ in replies]
    assert codes.count(200) >= 3 and codes.count(429) >= 1 and set(codes) <= {200, 429}, codes
    assert all("saturated" in body["error"] for status, body in replies if status == 429)


def queued_frames(url: str) -> float:
    """The gateway's elasticdf_gateway_queued_frames gauge, read from its /metrics."""
    conn = http.client.HTTPConnection(*url.split(":"), timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("elasticdf_gateway_queued_frames{"))


# never taken, so a client may retry elsewhere: refused at the connection, or answered 429 at once when the queue
# (2 frames here) was full as it arrived (the first request may still count as queued until the instance takes it)
NOT_TAKEN = ("ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected", 429)


def test_sigterm_drains_in_flight_requests(slow):
    """SIGTERM once the gateway holds requests (one at the instance, at least one queued: window 1): every request it
    took is answered 200; a request it had not taken is refused (NOT_TAKEN), never failed midway."""
    slow.start_gateway("drain")
    slow.wait_ready("drain")
    x = testmodels.random_frames(1, size=64)[0]
    outcomes: list = []

    def one() -> None:
        try:
            outcomes.append(post(slow.url("drain"), x)[0])
        except (ConnectionError, http.client.HTTPException) as exc:
            outcomes.append(type(exc).__name__)
    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    while queued_frames(slow.url("drain")) < 1 and any(t.is_alive() for t in threads):
        threads[0].join(0.002)
    code = slow.stop("drain", signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert code == 0
    assert outcomes.count(200) >= 2 and all(o == 200 or o in NOT_TAKEN for o in outcomes), outcomes
