"""The Open Inference Protocol's own clients (tritonclient HTTP with binary tensors, tritonclient gRPC, the KServe
Python client's v2 REST and gRPC), unmodified and with their defaults, against gateway replicas in their own
network namespaces in front of segments in theirs.

As in a cluster, the gateway cannot read the model here (the operator's gateway Deployment does not fetch
file:// models), so it serves the protocol without tensor metadata and the segments check the frames."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from elasticdf_segment import testmodels
from kserve_check import check_kserve_client
from tritonclient.utils import InferenceServerException

MODEL = "testnet"
RANGES = [[0, 1], [2, 3], [4, 5]]


def reference(model, frames: np.ndarray) -> np.ndarray:
    """The unsplit model, one frame at a time (its batch axis is fixed to 1)."""
    session = ort.InferenceSession(model.SerializeToString())
    return np.concatenate([session.run(None, {"x": f[None].astype(np.float32)})[0] for f in frames])


def http_infer(url: str, x: np.ndarray, datatype: str, request_id: str = "") -> np.ndarray:
    client = thttp.InferenceServerClient(url)
    inp = thttp.InferInput("x", list(x.shape), datatype)
    inp.set_data_from_numpy(x)  # default: binary tensor data
    result = client.infer(MODEL, [inp], request_id=request_id)
    assert result.get_response().get("id", "") == request_id
    return result.as_numpy(result.get_response()["outputs"][0]["name"])


def grpc_infer(target: str, x: np.ndarray, datatype: str, request_id: str = "") -> np.ndarray:
    client = tgrpc.InferenceServerClient(target)
    inp = tgrpc.InferInput("x", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    result = client.infer(MODEL, [inp], request_id=request_id)
    assert result.get_response().id == request_id
    return result.as_numpy(result.get_response().outputs[0].name)


def test_tritonclient_http_binary_and_grpc_through_the_gateway_namespace(pipeline_factory):
    model = testmodels.plain_cnn(seed=3)
    pipeline = pipeline_factory(model, RANGES)
    http_url = pipeline.url.removeprefix("http://")
    http = thttp.InferenceServerClient(http_url)
    grpc = tgrpc.InferenceServerClient(pipeline.grpc_target())
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready(MODEL)
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready(MODEL)
    assert "binary_tensor_data" in http.get_server_metadata()["extensions"]
    assert grpc.get_model_metadata(MODEL).name == MODEL

    frames = np.concatenate(testmodels.random_frames(3, seed=11))  # one request of 3 frames
    want = reference(model, frames)
    assert np.array_equal(http_infer(http_url, frames, "FP32", "http-fp32"), want)
    assert np.array_equal(http_infer(http_url, frames.astype(np.uint8), "UINT8", "http-u8"), want)
    assert np.array_equal(grpc_infer(pipeline.grpc_target(), frames, "FP32", "grpc-fp32"), want)
    assert np.array_equal(grpc_infer(pipeline.grpc_target(), frames.astype(np.uint8), "UINT8", "grpc-u8"), want)

    with pytest.raises(InferenceServerException, match="cannot hold exactly"):  # a value FP32 would round
        http_infer(http_url, np.array([[2**24 + 1]], np.int64), "INT64")
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        grpc.infer("other", [tgrpc.InferInput("x", [1], "FP32")])
    wrong = frames[:, :, :8]  # the gateway cannot check the frame shape here: the first segment refuses it
    with pytest.raises(InferenceServerException, match="segment 0"):
        grpc_infer(pipeline.grpc_target(), wrong, "FP32")
    assert np.array_equal(grpc_infer(pipeline.grpc_target(), frames, "FP32"), want)  # and it goes on serving


def test_kserve_client_rest_and_grpc_through_the_gateway_namespace(pipeline_factory):
    model = testmodels.plain_cnn(seed=5)
    pipeline = pipeline_factory(model, RANGES)
    frames = np.concatenate(testmodels.random_frames(2, seed=12))
    check_kserve_client(pipeline.url, pipeline.grpc_target(), MODEL, frames, reference(model, frames))


def test_two_gateway_replicas_in_two_namespaces_each_get_their_own_results(pipeline_factory):
    model = testmodels.plain_cnn(seed=4)
    pipeline = pipeline_factory(model, RANGES, gateways=2)
    frames = testmodels.random_frames(48, seed=5)
    want = reference(model, np.concatenate(frames))
    urls = [pipeline.url_of(r).removeprefix("http://") for r in (0, 1)]
    targets = [pipeline.grpc_target(r) for r in (0, 1)]

    def one(i: int) -> np.ndarray:  # both replicas, both protocols, at the same time
        replica, x = i % 2, frames[i]
        if i % 4 < 2:
            return http_infer(urls[replica], x, "FP32", f"h{i}")
        return grpc_infer(targets[replica], x.astype(np.uint8), "UINT8", f"g{i}")

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(len(frames))))
    for i, out in enumerate(got):
        assert np.array_equal(out, want[i:i + 1]), i

    last = pipeline.workdir / f"s{len(RANGES) - 1}.log"
    origins = set(re.findall(r'results subscriber .*"origin": (\d+)', last.read_text()))
    assert len(origins) == 2, last.read_text()[-2000:]  # each replica subscribed with its own origin

    # one replica going away takes nothing from the other: its results still come home
    stop = threading.Event()
    errors: list[Exception] = []

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                assert np.array_equal(http_infer(urls[0], frames[0], "FP32"), want[:1])
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    worker = threading.Thread(target=keep_asking)
    worker.start()
    pipeline.kill("gateway1")
    for _ in range(20):
        assert np.array_equal(grpc_infer(targets[0], frames[1], "FP32"), want[1:2])
    stop.set()
    worker.join(30)
    assert errors == []
