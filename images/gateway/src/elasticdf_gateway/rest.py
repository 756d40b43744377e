"""Open Inference Protocol REST (KServe v2) with the binary tensor data extension, on aiohttp.

Binary extension: a request whose `Inference-Header-Content-Length` header is N has N bytes of JSON followed by
the binary inputs (each input with `parameters.binary_data_size`, in input order). Outputs are binary when the
request says `parameters.binary_data_output` or the output's `parameters.binary_data`; the reply then carries
the same header and the outputs' bytes after its JSON. Every error is a JSON body `{"error": "..."}` with the
protocol's status; nothing a client sends can break the connection or the server.
"""

from __future__ import annotations

import numpy as np
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .pipeline import RequestFailed
from .service import EXTENSIONS, SERVER_NAME, SERVER_VERSION, Service
from .tensors import DATATYPE_OF, from_bytes, from_list

HEADER_LENGTH = "Inference-Header-Content-Length"
SERVICE = web.AppKey("service", Service)
MAX_BODY = web.AppKey("max_body", int)


def to_json(body: dict) -> bytes:
    """orjson: several times faster than the json module, and it writes numpy arrays' values in C (the JSON
    outputs), so no per-element Python list is built on the hot path."""
    return orjson.dumps(body, default=lambda value: value.tolist(), option=orjson.OPT_SERIALIZE_NUMPY)


def json_reply(status: int, body: dict) -> web.Response:
    return web.Response(status=status, body=to_json(body), content_type="application/json")


@web.middleware
async def protocol_errors(request: web.Request, handler) -> web.StreamResponse:
    """RequestFailed and aiohttp's own errors (404, 405, 413) as the protocol's JSON error bodies."""
    try:
        return await handler(request)
    except RequestFailed as exc:
        return json_reply(exc.status, {"error": str(exc)})
    except web.HTTPRequestEntityTooLarge:
        return json_reply(413, {"error": f"request body larger than {request.app[MAX_BODY]} bytes "
                                         "(the gateway's --max-body-bytes)"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_reply(exc.status, {"error": f"{exc.reason}: {request.method} {request.path}; see /v2 for the "
                                                "Open Inference Protocol paths"})


def service_of(request: web.Request) -> Service:
    return request.app[SERVICE]


async def server_metadata(request: web.Request) -> web.Response:
    return json_reply(200, {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


async def live(request: web.Request) -> web.Response:
    return json_reply(200, {"live": True})


async def ready(request: web.Request) -> web.Response:
    ok = service_of(request).pipeline.ready
    return json_reply(200 if ok else 503, {"ready": ok})


async def model_metadata(request: web.Request) -> web.Response:
    service = service_of(request)
    service.check_model(request.match_info["model"], request.match_info.get("version"))
    return json_reply(200, service.model.metadata())


async def model_ready(request: web.Request) -> web.Response:
    service = service_of(request)
    service.check_model(request.match_info["model"], request.match_info.get("version"))
    ok = service.pipeline.ready
    return json_reply(200 if ok else 503, {"name": service.model.name, "ready": ok})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(service_of(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def read_body(request: web.Request) -> bytes | np.ndarray:
    """The body in one buffer sized by Content-Length, each received chunk copied straight into it: aiohttp's
    request.read() copies a body twice more (into a growing bytearray, then into bytes), for a 224x224 image
    150 kB each time. A chunked body (no length) is read by aiohttp."""
    size = request.content_length
    if size is None:
        return await request.read()
    limit = request.app[MAX_BODY]
    if size > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
    body = np.empty(size, np.uint8)  # not zero-filled like a bytearray: every byte is received into it
    view, at = memoryview(body), 0
    while at < size and (chunk := await request.content.readany()):
        view[at:at + len(chunk)] = chunk
        at += len(chunk)
    if at < size:  # the client went away mid-body (aiohttp normally raises first): never zeros as data
        raise RequestFailed(400, f"the body ended after {at} of its {size} bytes (Content-Length)")
    return body


def split_body(body: bytes | np.ndarray, header_length: str | None) -> tuple[dict, memoryview]:
    """The JSON request and the binary data behind it."""
    view = memoryview(body)
    size = len(body)
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise RequestFailed(400, f"{HEADER_LENGTH} {header_length!r} is not a length within the body "
                                     f"({len(body)} bytes)")
    try:
        request = orjson.loads(view[:size])
    except orjson.JSONDecodeError as exc:
        raise RequestFailed(400, f"request JSON is malformed: {exc}") from exc
    if not isinstance(request, dict):
        raise RequestFailed(400, "request JSON must be an object with \"inputs\"")
    return request, view[size:]


def parameters(item: dict) -> dict:
    value = item.get("parameters") or {}
    if not isinstance(value, dict):
        raise RequestFailed(400, f"\"parameters\" must be an object, got {value!r}")
    return value


def decode_input(service: Service, request: dict, binary: memoryview) -> np.ndarray:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestFailed(400, f"\"inputs\" must list exactly one tensor (model {service.model.name!r} takes "
                                 f"{service.model.input.name!r}), got {inputs!r:.200}")
    tensor = inputs[0]
    name = tensor.get("name")
    spec = service.input_spec(name)
    size = parameters(tensor).get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise RequestFailed(400, f"input {name!r} has neither \"data\" nor parameters.binary_data_size")
        return from_list(name, tensor.get("datatype"), tensor.get("shape"), tensor["data"], spec, service.max_rows)
    if not isinstance(size, int) or not 0 <= size <= len(binary):
        raise RequestFailed(400, f"input {name!r}: binary_data_size {size!r} but only {len(binary)} bytes of "
                                 "binary data follow the JSON (truncated payload?)")
    if size != len(binary):
        raise RequestFailed(400, f"input {name!r}: binary_data_size {size} but {len(binary)} bytes of binary "
                                 "data follow the JSON")
    return from_bytes(name, tensor.get("datatype"), tensor.get("shape"), binary, spec, service.max_rows)


def wanted_outputs(service: Service, request: dict) -> list[tuple[str, bool]]:
    """(name, binary) of each output to return."""
    default_binary = bool(parameters(request).get("binary_data_output", False))
    outputs = request.get("outputs")
    if outputs is None:
        return [(service.model.output_name, default_binary)]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise RequestFailed(400, f"\"outputs\" must be a list of objects with \"name\", got {outputs!r:.200}")
    service.check_outputs([o.get("name") for o in outputs])
    return [(o["name"], bool(parameters(o).get("binary_data", default_binary))) for o in outputs]


def encode_reply(service: Service, request: dict, wanted: list[tuple[str, bool]], result: np.ndarray) -> web.Response:
    reply: dict = {"model_name": service.model.name, "model_version": "1", "outputs": []}
    if "id" in request:
        reply["id"] = request["id"]
    chunks: list[memoryview] = []
    for name, binary in wanted:
        tensor = {"name": name, "datatype": DATATYPE_OF[result.dtype], "shape": list(result.shape)}
        if binary:
            data = np.ascontiguousarray(result).data.cast("B")  # a view: the join below is the one copy
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = np.ascontiguousarray(result).ravel()  # written by orjson (to_json)
        reply["outputs"].append(tensor)
    head = to_json(reply)
    if not chunks:
        return web.Response(body=head, content_type="application/json")
    return web.Response(body=b"".join([head, *chunks]), content_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(len(head))})


async def infer(request: web.Request) -> web.Response:
    service = service_of(request)
    try:
        service.check_model(request.match_info["model"], request.match_info.get("version"))
        body, binary = split_body(await read_body(request), request.headers.get(HEADER_LENGTH))
        frames = decode_input(service, body, binary)
        wanted = wanted_outputs(service, body)
    except RequestFailed as exc:
        service.failed(exc)
        raise
    return encode_reply(service, body, wanted, await service.run(frames))


def make_app(service: Service, max_body_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[protocol_errors])
    app[SERVICE], app[MAX_BODY] = service, max_body_bytes
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    for base in (model, versioned):
        app.router.add_get(base, model_metadata)
        app.router.add_get(f"{base}/ready", model_ready)
        app.router.add_post(f"{base}/infer", infer)
    return app
