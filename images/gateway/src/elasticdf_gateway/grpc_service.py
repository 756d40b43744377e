"""Open Inference Protocol gRPC (`inference.GRPCInferenceService`, KServe v2) on grpcio's asyncio server.

The messages and the servicer base come from tritonclient[grpc]'s generated `service_pb2`: the reference client
of the protocol ships them, generated for the protobuf it depends on, so the gateway vendors no generated code and
needs no protoc at build time. Triton's service is a superset of the KServe v2 proto with the same package, names
and field numbers; the methods beyond KServe v2 (repository, shared memory, ...) answer UNIMPLEMENTED.
Inputs come as `raw_input_contents` (viewed, not copied) or typed contents; outputs always as raw contents.
"""

from __future__ import annotations

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .pipeline import RequestFailed
from .service import EXTENSIONS, SERVER_NAME, SERVER_VERSION, VERSION, Service
from .tensors import DATATYPE_OF, from_bytes, from_list

STATUS_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
                429: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL,
                503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents"}


def tensor_metadata(spec: dict) -> service_pb2.ModelMetadataResponse.TensorMetadata:
    return service_pb2.ModelMetadataResponse.TensorMetadata(name=spec["name"], datatype=spec["datatype"],
                                                           shape=spec["shape"])


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: Service):
        self.service = service

    async def _abort(self, context: grpc.aio.ServicerContext, exc: RequestFailed):
        await context.abort(STATUS_CODES.get(exc.status, grpc.StatusCode.UNKNOWN), str(exc))

    async def ServerLive(self, request, context):  # noqa: N802 - the proto's names
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self.service.pipeline.ready)

    async def ModelReady(self, request, context):  # noqa: N802
        try:
            self.service.check_model(request.name, request.version)
        except RequestFailed as exc:
            await self._abort(context, exc)
        return service_pb2.ModelReadyResponse(ready=self.service.pipeline.ready)

    async def ServerMetadata(self, request, context):  # noqa: N802
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):  # noqa: N802
        try:
            self.service.check_model(request.name, request.version)
        except RequestFailed as exc:
            await self._abort(context, exc)
        meta = self.service.model.metadata()
        return service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor_metadata(t) for t in meta["inputs"]], outputs=[tensor_metadata(t) for t in meta["outputs"]])

    def _frames(self, request: service_pb2.ModelInferRequest) -> np.ndarray:
        service = self.service
        service.check_model(request.model_name, request.model_version)
        if len(request.inputs) != 1:
            raise RequestFailed(400, f"ModelInferRequest.inputs must list exactly one tensor (model "
                                     f"{service.model.name!r} takes {service.model.input.name!r}), "
                                     f"got {len(request.inputs)}")
        tensor = request.inputs[0]
        spec = service.input_spec(tensor.name)
        shape = list(tensor.shape)
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1:
                raise RequestFailed(400, f"{len(request.raw_input_contents)} raw_input_contents for one input")
            return from_bytes(tensor.name, tensor.datatype, shape, request.raw_input_contents[0], spec,
                              service.max_rows)
        field = CONTENTS.get(tensor.datatype)
        if field is None:  # FP16 and BYTES have no typed contents here; from_list names the problem
            if tensor.datatype == "FP16":
                raise RequestFailed(400, f"input {tensor.name!r}: FP16 data must come as raw_input_contents")
            field = "bytes_contents"
        return from_list(tensor.name, tensor.datatype, shape, getattr(tensor.contents, field), spec,
                         service.max_rows)

    async def ModelInfer(self, request, context):  # noqa: N802
        service = self.service
        try:
            frames = self._frames(request)
            service.check_outputs([o.name for o in request.outputs])
        except RequestFailed as exc:
            service.failed(exc)
            await self._abort(context, exc)
        try:
            result = await service.run(frames)
        except RequestFailed as exc:
            await self._abort(context, exc)
        names = [o.name for o in request.outputs] or [service.model.output_name]
        data = np.ascontiguousarray(result).tobytes()
        return service_pb2.ModelInferResponse(
            model_name=service.model.name, model_version=VERSION, id=request.id,
            outputs=[service_pb2.ModelInferResponse.InferOutputTensor(
                name=name, datatype=DATATYPE_OF[result.dtype], shape=result.shape) for name in names],
            raw_output_contents=[data] * len(names))


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0)]


def make_server(service: Service, max_message_bytes: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=server_options(max_message_bytes))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    return server
