"""The floor under the gateway: its server stack alone, for benchmarks/gateway_bench.py.

aiohttp (REST) and grpc.aio (gRPC) on one uvloop loop, configured as the gateway runs them, but with no
pipeline, no validation and no model: every inference request is read in full and answered with a reply
prepared once, of the size the gateway answers (a [1, K] FP32 result as JSON, as binary REST, as gRPC raw
contents). What the benchmark measures for this server is what the stack and the kernel's loopback TCP cost
per request; the gateway's CPU per inference above it is its own work (decoding, batching, the segments).

Run: python -m floor_server HOST HTTP_PORT GRPC_PORT K (with benchmarks/ on PYTHONPATH)
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import numpy as np
import uvloop
from aiohttp import web
from elasticdf_gateway.grpc_service import server_options
from elasticdf_gateway.rest import HEADER_LENGTH, json_reply, to_json
from tritonclient.grpc import service_pb2, service_pb2_grpc

OUTPUT = {"name": "y", "datatype": "FP32"}


def rest_handler(outputs: int):
    result = np.zeros((1, outputs), np.float32)
    reply = {"model_name": "testnet", "model_version": "1"}
    as_json = {**reply, "outputs": [{**OUTPUT, "shape": [1, outputs], "data": result.ravel()}]}
    head = to_json({**reply, "outputs": [{**OUTPUT, "shape": [1, outputs],
                                          "parameters": {"binary_data_size": result.nbytes}}]})
    binary = head + result.tobytes()

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        if HEADER_LENGTH not in request.headers:
            return json_reply(200, as_json)
        return web.Response(body=binary, content_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(len(head))})
    return infer


class FloorServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, outputs: int):
        self.reply = service_pb2.ModelInferResponse(
            model_name="testnet", model_version="1",
            outputs=[service_pb2.ModelInferResponse.InferOutputTensor(**OUTPUT, shape=[1, outputs])],
            raw_output_contents=[np.zeros(outputs, np.float32).tobytes()])

    async def ModelInfer(self, request, context):  # noqa: N802 - the proto's name
        return self.reply


async def serve(host: str, http_port: int, grpc_port: int, outputs: int) -> None:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/v2/health/ready", lambda request: json_reply(200, {"ready": True}))
    app.router.add_post("/v2/models/{model}/infer", rest_handler(outputs))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, http_port, reuse_address=True).start()
    server = grpc.aio.server(options=server_options(64 << 20))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(outputs), server)
    server.add_insecure_port(f"{host}:{grpc_port}")
    await server.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    host, http_port, grpc_port, outputs = sys.argv[1], *map(int, sys.argv[2:5])
    uvloop.run(serve(host, http_port, grpc_port, outputs))
