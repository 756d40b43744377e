"""`python kserve_client.py REST_BASE GRPC_TARGET MODEL FRAMES_JSON`: the KServe Python client, unmodified, against a
gateway: v2 REST (JSON and binary tensors) and gRPC (FP32 and UINT8), readiness, and an unknown model over gRPC.
Prints one JSON line of what it got; the tests compare it with the unsplit model.

Its own process: kserve and tritonclient both register the `inference.*` protobuf messages, and one process's
descriptor pool takes only one of them."""

import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def request(model: str, frames: np.ndarray, datatype: str, request_id: str, binary: bool | None = None) -> InferRequest:
    inp = InferInput("x", list(frames.shape), datatype)
    if binary is None:
        inp.set_data_from_numpy(frames)
    else:
        inp.set_data_from_numpy(frames, binary_data=binary)
    return InferRequest(model, [inp], request_id=request_id)


async def rest(base: str, model: str, frames: np.ndarray) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        out = {"ready": await client.is_server_ready(base)}
        for name, binary in (("json", False), ("binary", True)):
            reply = await client.infer(base, request(model, frames, "FP32", f"rest-{name}", binary), model_name=model)
            out[name] = {"id": reply.id, "output": reply.outputs[0].as_numpy().tolist()}
    finally:
        await client.close()
    return out


async def grpc_calls(target: str, model: str, frames: np.ndarray) -> dict:
    client = InferenceGRPCClient(target, retries=0)
    try:
        out = {"ready": await client.is_server_ready(), "model_ready": await client.is_model_ready(model)}
        for datatype, dtype in (("FP32", np.float32), ("UINT8", np.uint8)):
            reply = await client.infer(request(model, frames.astype(dtype), datatype, f"grpc-{datatype}"))
            out[datatype] = {"id": reply.id, "output": reply.outputs[0].as_numpy().tolist()}
        try:
            await client.infer(request("other", frames, "FP32", "grpc-unknown"))
        except grpc.RpcError as err:
            out["unknown_model"] = {"code": err.code().name, "message": err.details()}
    finally:
        await client.close()
    return out


async def main(base: str, target: str, model: str, frames: np.ndarray) -> None:
    print(json.dumps({"rest": await rest(base, model, frames), "grpc": await grpc_calls(target, model, frames)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], np.array(json.loads(sys.argv[4]), dtype=np.float32)))
