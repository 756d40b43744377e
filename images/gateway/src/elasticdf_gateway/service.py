"""What REST and gRPC share: the served model's description, request validation, metrics, and the call into the
pipeline. Both front ends only translate their wire format to and from this."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from elasticdf_contract.wiring import SegmentWiring
from elasticdf_partitioner.errors import ElasticDFError
from elasticdf_segment import split
from elasticdf_segment.observe import RateWindow
from onnx import helper
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from .pipeline import Pipeline, RequestFailed
from .tensors import DATATYPE_OF, TensorSpec

log = logging.getLogger("elasticdf.gateway")
SERVER_NAME, SERVER_VERSION = "elasticdf-gateway", "2"
EXTENSIONS = ["binary_tensor_data"]
VERSION = "1"  # the one version a gateway serves
UNKNOWN_INPUT = TensorSpec("input", "FP32", ())  # the model's ONNX is not readable here: any name, any shape


@dataclass
class Model:
    name: str
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0] if self.inputs else UNKNOWN_INPUT

    @property
    def output_name(self) -> str:
        return self.outputs[0].name if self.outputs else "output"

    def metadata(self) -> dict:
        return {"name": self.name, "versions": [VERSION], "platform": "elasticdf",
                "inputs": [t.metadata() for t in self.inputs], "outputs": [t.metadata() for t in self.outputs]}


def model_from(name: str, wirings: list[SegmentWiring], batching: bool) -> Model:
    """Input/output names, datatypes and shapes from the model ONNX when the gateway can read it (else none).
    With batching the first axis is reported as -1: any number of frames per request."""
    source = next((w.artifacts for w in wirings if w.artifacts.onnx), None)
    if source is None:
        return Model(name)
    try:  # the model exactly as the segments run it
        graph = split.runnable(source.onnx, source.onnx_sha256).graph
    except (OSError, ValueError, ElasticDFError) as exc:
        log.warning("model metadata unavailable: %s", exc)
        return Model(name)

    def spec(value) -> TensorSpec:
        t = value.type.tensor_type
        dims = [d.dim_value or -1 for d in t.shape.dim]
        if batching and dims:
            dims[0] = -1
        return TensorSpec(value.name, DATATYPE_OF[np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))], tuple(dims))
    initializers = {i.name for i in graph.initializer}
    return Model(name, [spec(v) for v in graph.input if v.name not in initializers], [spec(v) for v in graph.output])


class GatewayMetrics:
    def __init__(self, model: str, pipeline: Pipeline):
        self.registry = CollectorRegistry()
        self.requests = Counter("elasticdf_gateway_requests", "Inference requests by HTTP status (gRPC mapped)",
                                ["model", "code"], registry=self.registry)
        self.succeeded = self.requests.labels(model, "200")  # resolved once: labels() locks and looks up per call
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
        Gauge("elasticdf_gateway_queued_frames", "Frames waiting for an instance", ["model"],
              registry=self.registry).labels(model).set_function(lambda: pipeline.queued_frames)
        self.registry.register(HeldInstances(model, pipeline))


class HeldInstances:
    """elasticdf_gateway_instance_held{instance, state}: the instances this replica serves, has out of rotation
    (down) or still drains. The operator releases an instance's card pods only once no replica lists it."""

    def __init__(self, model: str, pipeline: Pipeline):
        self.model, self.pipeline = model, pipeline

    def collect(self):
        family = GaugeMetricFamily("elasticdf_gateway_instance_held", self.__doc__.splitlines()[0],
                                   labels=["model", "instance", "state"])
        for instance, state in self.pipeline.held():
            family.add_metric([self.model, instance, state], 1)
        yield family


class Service:
    def __init__(self, model: Model, pipeline: Pipeline):
        self.model, self.pipeline = model, pipeline
        self.metrics = GatewayMetrics(model.name, pipeline)

    @property
    def max_rows(self) -> int:
        return self.pipeline.max_batch

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.model.name:
            raise RequestFailed(404, f"unknown model {name!r}; this gateway serves {self.model.name!r}")
        if version and version != VERSION:
            raise RequestFailed(404, f"model {name!r} has no version {version!r}; versions: [{VERSION!r}]")

    def input_spec(self, name: object) -> TensorSpec:
        spec = self.model.input
        if self.model.inputs and name != spec.name:
            raise RequestFailed(400, f"unknown input {name!r}; model {self.model.name!r} takes {spec.name!r}")
        return spec

    def check_outputs(self, names: list[object]) -> None:
        known = [self.model.output_name]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RequestFailed(400, f"unknown output {unknown[0]!r}; model {self.model.name!r} has outputs {known}")

    def failed(self, exc: RequestFailed) -> None:
        self.metrics.requests.labels(self.model.name, str(exc.status)).inc()

    async def run(self, frames: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            result = await self.pipeline.infer(frames)
        except RequestFailed as exc:
            self.failed(exc)
            raise
        self.metrics.latency.observe(time.perf_counter() - start)
        self.metrics.window.tick()
        self.metrics.succeeded.inc()
        return result
