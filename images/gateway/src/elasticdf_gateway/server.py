"""KServe v2 / Open Inference Protocol (REST) on the gateway port, multiplexed with the frame protocol.

The operator wires every last segment to the gateway Service port (builders.GATEWAY_PORT) and exposes only that
port, so one listener serves both: a connection whose first four bytes are the frame magic is a last segment
returning results; anything else is HTTP.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from elasticdf_segment.framing import KIND_HELLO, MAGIC, FramingError, read_frame
from elasticdf_segment.observe import RateWindow
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .pipeline import Pipeline, RequestFailed

log = logging.getLogger("elasticdf.gateway")
V2_DATATYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT8": "i1", "INT16": "<i2", "INT32": "<i4",
                "INT64": "<i8", "UINT8": "u1", "UINT16": "<u2", "BOOL": "?"}
DATATYPE_OF = {np.dtype(v): k for k, v in V2_DATATYPES.items()}
MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?(/ready|/infer)?$")


class GatewayMetrics:
    def __init__(self, model: str, pipeline: Pipeline):
        self.registry = CollectorRegistry()
        self.requests = Counter("elasticdf_gateway_requests", "Inference requests by HTTP status",
                                ["model", "code"], registry=self.registry)
        self.latency = Histogram("elasticdf_gateway_latency_seconds", "End-to-end latency of successful requests",
                                 ["model"], registry=self.registry,
                                 buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
                                          0.5, 1, 2.5, 5)).labels(model)
        self.window = RateWindow()
        Gauge("elasticdf_gateway_fps", "Completed frames per second over the last 5 s (feeds observedFPS)",
              ["model"], registry=self.registry).labels(model).set_function(self.window.rate)
        Gauge("elasticdf_gateway_instances_ready", "Pipeline instances in rotation", ["model"],
              registry=self.registry).labels(model).set_function(lambda: len(pipeline.ready_instances()))
        Gauge("elasticdf_gateway_late_frames", "Results that arrived after their request had failed",
              ["model"], registry=self.registry).labels(model).set_function(lambda: pipeline.late_frames)


def to_array(tensor: dict) -> np.ndarray:
    try:
        dtype = V2_DATATYPES[tensor["datatype"]]
        return np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
    except KeyError as exc:
        raise RequestFailed(400, f"input tensor needs name, shape, datatype ({'|'.join(V2_DATATYPES)}) and data; "
                                 f"missing or unknown {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise RequestFailed(400, f"input tensor {tensor.get('name')!r}: {exc}") from exc


def to_tensor(name: str, array: np.ndarray) -> dict:
    return {"name": name, "shape": list(array.shape), "datatype": DATATYPE_OF.get(array.dtype, "FP32"),
            "data": array.ravel().tolist()}


def make_server(host: str, port: int, model: str, pipeline: Pipeline, metadata: dict) -> ThreadingHTTPServer:
    metrics = GatewayMetrics(model, pipeline)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection per client, not per request

        def handle(self) -> None:
            try:
                first = self.connection.recv(len(MAGIC), socket.MSG_PEEK | socket.MSG_WAITALL)
            except OSError:
                return
            if first == MAGIC:
                self._results()
            else:
                super().handle()

        def _results(self) -> None:
            source, hello = f"{self.client_address[0]}:{self.client_address[1]}", None
            try:
                while (frame := read_frame(self.rfile)) is not None:
                    if frame.kind == KIND_HELLO:
                        hello = frame
                        log.info("results connection from %s: %s", source, frame.message)
                    else:
                        pipeline.on_frame(frame, source)
            except (OSError, FramingError) as exc:
                log.warning("results connection %s broke: %s", source, exc)
            pipeline.on_results_closed(hello, source)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                return self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            if self.path == "/v2/health/live":
                return self._json(200, {"live": True})
            if self.path == "/v2/health/ready":
                ready = bool(pipeline.ready_instances())
                return self._json(200 if ready else 503, {"ready": ready})
            match = MODEL_PATH.match(self.path)
            if not match or match.group(1) != model:
                return self._json(404, {"error": f"unknown path or model {self.path!r}; this gateway serves {model!r}"})
            if match.group(2) == "/ready":
                ready = bool(pipeline.ready_instances())
                return self._json(200 if ready else 503, {"name": model, "ready": ready})
            return self._json(200, metadata)

        def do_POST(self) -> None:  # noqa: N802
            match = MODEL_PATH.match(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not match or match.group(2) != "/infer" or match.group(1) != model:
                return self._json(404, {"error": f"POST /v2/models/{model}/infer is the only inference path"})
            start = time.perf_counter()
            try:
                request = json.loads(body or b"{}")
                inputs = request.get("inputs") or []
                if len(inputs) != 1:
                    raise RequestFailed(400, f"expected exactly one input tensor, got {len(inputs)}")
                rid, result = pipeline.infer(to_array(inputs[0]))
            except json.JSONDecodeError as exc:
                return self._fail(RequestFailed(400, f"body is not JSON: {exc}"))
            except RequestFailed as exc:
                return self._fail(exc)
            metrics.latency.observe(time.perf_counter() - start)
            metrics.window.tick()
            metrics.requests.labels(model, "200").inc()
            outputs = metadata.get("outputs") or [{"name": "output"}]
            reply = {"model_name": model, "outputs": [to_tensor(outputs[0]["name"], result)],
                     "parameters": {"elasticdf_request_id": rid}}
            if "id" in request:
                reply["id"] = request["id"]
            return self._json(200, reply)

        def _fail(self, exc: RequestFailed) -> None:
            metrics.requests.labels(model, str(exc.status)).inc()
            self._json(exc.status, {"error": str(exc)})

        def _json(self, code: int, body: dict) -> None:
            self._send(code, json.dumps(body).encode(), "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
