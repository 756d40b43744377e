"""The Kubernetes API of Elastic-DF (DESIGN §5.4) as pydantic models: the single source of crds/*.yaml.

Field names are the camelCase names users write in YAML (aliases); Python code uses snake_case.
"""

from __future__ import annotations

from typing import Literal

from elasticdf_contract.names import GROUP, VERSION
from elasticdf_partitioner.catalog import Limits, load_catalog
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator
from pydantic.alias_generators import to_camel

CARD_TYPE_NAMES = tuple(sorted(load_catalog().cards))
CardTypeName = Literal[CARD_TYPE_NAMES]  # type: ignore[valid-type]
Objective = Literal["throughput", "latency", "cost"]
RuntimeMode = Literal["auto", "xrt", "emulation"]
ConditionStatus = Literal["True", "False", "Unknown"]
Phase = Literal["Pending", "Solving", "Scheduling", "Running", "Degraded", "Failed"]
BuildPhase = Literal["Pending", "Building", "Ready", "Failed"]
BuildStep = Literal["bundle", "build", "push"]
BuildPolicy = Literal["prefer-existing", "best"]
# PlanCurrent reports a roll to a new plan; it is not a component of Ready (the old plan serves meanwhile)
ConditionType = Literal["PartitionSolved", "Scheduled", "SegmentsReady", "LinksUp", "PlanCurrent", "Ready"]
CONDITION_TYPES: tuple[str, ...] = ConditionType.__args__


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Artifacts(_Model):
    """A user's model: a FINN dataflow ONNX or a QONNX, by URI, and its compiled bitstreams."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!(self.onnx.startsWith('https://') || self.onnx.startsWith('http://')) || has(self.sha256)",
         "message": "sha256 is required for https:// and http:// artifacts"}]})

    onnx: str = Field(min_length=1, max_length=2048, description="URI of the model (FINN dataflow ONNX or QONNX): "
                      "https://, http:// (with sha256), oci://REGISTRY/REPO:TAG or @sha256:..., "
                      "file:///PATH (below the chart's modelFetch.fileRoot), pvc://CLAIM/PATH")
    sha256: str | None = Field(None, pattern=r"^(sha256:)?[a-f0-9]{64}$",
                               description="sha256 digest of the ONNX file (sha256:HEX or HEX); required for "
                                           "https:// and http://, checked when given for the other schemes")
    bitstreams: dict[str, str] = Field(default_factory=dict,
                                       description="card build digest (status.builds[].digest) -> URI of its xclbin")


class ModelSource(_Model):
    """Which network to run: a zoo name or artifact URIs (exactly one)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.name) != has(self.artifacts)", "message": "set exactly one of name or artifacts"}]})

    name: str | None = Field(None, min_length=1, max_length=63, description="model zoo name, e.g. resnet50")
    artifacts: Artifacts | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if (self.name is None) == (self.artifacts is None):
            raise ValueError("set exactly one of name or artifacts")
        return self


class Autoscaling(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must be <= maxReplicas"}]})

    min_replicas: int = Field(1, ge=0, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_fps: float = Field(gt=0, alias="targetFPS", description="observed fps per replica to aim for")
    scale_up_stabilization_seconds: int = Field(0, ge=0, le=3600)
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=3600)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


class Placement(_Model):
    card_types: list[CardTypeName] | None = Field(None, description="only these card types (default: any)")
    node_selector: dict[str, str] | None = Field(None, description="only nodes with these labels")
    max_segments_per_instance: int | None = Field(None, ge=1, le=16)
    limits: Limits | None = Field(None, description="per-SLR utilisation limits (shares, 0-1]")


# Pinned to the release (the chart's appVersion), never a moving tag.
DEFAULT_SEGMENT_IMAGE = "ghcr.io/elasticdf/segment:0.1.0"
DEFAULT_GATEWAY_IMAGE = "ghcr.io/elasticdf/gateway:0.1.0"


class Runtime(_Model):
    mode: RuntimeMode = "auto"
    image: str = Field(DEFAULT_SEGMENT_IMAGE, min_length=1, description="segment pod image")
    gateway_image: str = Field(DEFAULT_GATEWAY_IMAGE, min_length=1,
                               description="inference gateway image (the <name>-gateway Deployment)")


class ElasticInferenceSpec(_Model):
    model: ModelSource
    objective: Objective = "throughput"
    target_fps: float | None = Field(None, gt=0, alias="targetFPS")
    min_instance_fps: float | None = Field(None, gt=0, alias="minInstanceFPS",
                                           description="latency floor: no instance (replica) slower than this")
    replicas: int = Field(1, ge=0, le=1000, description="number of instances (scale subresource)")
    builds: BuildPolicy = Field(
        "prefer-existing", description="when the plan's inputs change (this spec's model, objective, targets or "
        "placement; a Fabric's clocks): prefer-existing keeps the groups of the old plan serving until the new "
        "plan's card builds exist and its groups are ready, then rolls group by group without an instance "
        "down; best releases the old groups at once and waits for the new plan's builds")
    autoscaling: Autoscaling | None = None
    placement: Placement | None = None
    runtime: Runtime | None = None


class Condition(_Model):
    type: ConditionType
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class SegmentSummary(_Model):
    node: str
    card: int
    card_type: str
    layers: list[int] = Field(default_factory=list, description="[first, last] layer index")


class InstanceSummary(_Model):
    index: int
    group: int = 0
    fps: float
    ready: bool = False
    standby: bool = Field(False, description="flashed but out of the gateway's rotation")
    segments: list[SegmentSummary] = Field(default_factory=list)


class GroupCard(_Model):
    node: str
    card: int
    card_type: str
    build: str = Field(description="digest of the card build it runs")


class GroupSummary(_Model):
    """Cards that together host whole instances: what the operator places, holds and releases."""

    index: int
    cards: list[GroupCard] = Field(default_factory=list)
    instances: list[int] = Field(default_factory=list)
    predicted_fps: float = Field(0, alias="predictedFPS", description="all its instances")


class CardClock(_Model):
    mhz: float = Field(description="the kernel clock plans use for the card type")
    source: str = Field(description="modelled default, a Fabric's clocks, or the clock a card build reported")
    build_mhz: float | None = Field(None, alias="buildMhz", description="the clock its card builds are made for, "
                                                                       "where mhz is what a build reached")


class PlanSummary(_Model):
    objective: str = ""
    model: str = ""
    instances: list[InstanceSummary] = Field(default_factory=list)
    groups: list[GroupSummary] = Field(default_factory=list)
    cards_used: int = 0
    clocks: dict[str, CardClock] = Field(default_factory=dict, description="per card type in use: its clock")
    resource_scale: dict[str, dict[str, float]] = Field(default_factory=dict, alias="resourceScale", description=(
        "per card type in use whose builds reported other resources than estimated: used / estimated per kind "
        "(lut, ff, bram18, uram, dsp); later placements divide capacity by it"))


class BuildSegment(_Model):
    layers: list[int] = Field(description="[first, last] layer index")
    slrs: list[int]
    floorplan: dict[str, list[int]] = Field(default_factory=dict, description="SLR -> [first, last] layer")


class BuildStatus(_Model):
    """One distinct card build (what a card is flashed with), identified by its content digest."""

    digest: str
    card_type: str
    fclk_mhz: float
    cards: int = Field(description="cards of this resource running it")
    segments: list[BuildSegment] = Field(default_factory=list)
    folding: dict[str, dict] = Field(default_factory=dict, description="FINN folding config of its layers")
    bitstream: str | None = Field(None, description="URI from spec.model.artifacts.bitstreams (xrt)")
    phase: BuildPhase | None = Field(None, description="with a build registry: Pending (waiting for a builder "
                                     "Job), Building, Ready (in the registry), Failed (retries used up)")
    progress: BuildStep | None = Field(None, description="the builder Job's step while Building")
    attempts: int = Field(0, description="builder Jobs made for it so far")
    job: str | None = Field(None, description="the latest builder Job (operator namespace)")
    start_time: str | None = Field(None, description="when the latest builder Job started")
    age_seconds: int | None = Field(None, description="seconds since the latest builder Job started")
    artifact: str | None = Field(None, description="oci://REGISTRY/elasticdf/builds@sha256:MANIFEST card pods pull")
    reported_clock_mhz: float | None = Field(None, alias="reportedClockMhz", description="the clock the build's "
                                             "report states (Vitis: achieved; emulation: modelled): its cards run "
                                             "at it, and the next plans use it (status.plan.clocks)")
    reported_resources: dict[str, float] | None = Field(None, alias="reportedResources", description="what the "
                                                        "build's report says it uses (LUT, FF, BRAM_18K, URAM, DSP); "
                                                        "the next plans scale capacity by used / estimated")
    message: str | None = Field(None, description="why it is not Ready (a failed Job's log tail)")


class ElasticInferenceStatus(_Model):
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    plan: PlanSummary | None = None
    replicas: int = Field(0, description="active instances (in the gateway's rotation)")
    ready_replicas: int = 0
    standby_replicas: int = Field(0, description="instances flashed on held cards but out of rotation")
    builds: list[BuildStatus] = Field(default_factory=list)
    selector: str | None = None
    predicted_fps: float = Field(0, alias="predictedFPS")
    observed_fps: float | None = Field(None, alias="observedFPS")
    cost_per_hour: float = 0
    fps_per_dollar_hour: float = 0
    endpoint: str | None = Field(None, description="KServe v2 REST base URL of the model, served by the gateway "
                                                   "(in-cluster Service <name>-gateway)")
    grpc_endpoint: str | None = Field(None, description="host:port of the gateway's Open Inference Protocol gRPC "
                                                        "service (inference.GRPCInferenceService), same Service")
    observed_generation: int | None = None


class Switch(_Model):
    name: str = Field(min_length=1)
    uplink_gbps: float = Field(400, gt=0)
    to: str | None = None


class Uplink(_Model):
    node: str = Field(min_length=1)
    switch: str = Field(min_length=1)
    gbps: float = Field(100, gt=0)


class FabricSpec(_Model):
    switches: list[Switch] = Field(default_factory=list)
    uplinks: list[Uplink] = Field(default_factory=list, description="node -> switch links (default: label)")
    address_pool: str = Field("10.100.0.0/16", pattern=r"^\d+\.\d+\.\d+\.\d+/\d+$",
                              description="CIDR the QSFP ports get their IPs from")
    udp_port: int = Field(50000, ge=1024, le=65535)
    costs: dict[str, float] = Field(default_factory=dict,
                                    description="$/card-hour per card type, overriding the catalog's prices")
    clocks: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="achieved kernel clock (MHz) per card type, e.g. from the builds' "
        "reports, overriding the catalog's conservative modelled default; plans (and their card builds) use it")


class CrdInfo(BaseModel):
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    scope: Literal["Namespaced", "Cluster"]
    spec: type[BaseModel]
    status: type[BaseModel] | None
    printer_columns: list[dict] = []
    scale: bool = False


ELASTIC_INFERENCE = CrdInfo(
    kind="ElasticInference", plural="elasticinferences", singular="elasticinference", short_names=["ei"],
    scope="Namespaced", spec=ElasticInferenceSpec, status=ElasticInferenceStatus, scale=True,
    printer_columns=[
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Standby", "type": "integer", "jsonPath": ".status.standbyReplicas", "priority": 1},
        {"name": "FPS", "type": "number", "jsonPath": ".status.predictedFPS"},
        {"name": "$/h", "type": "number", "jsonPath": ".status.costPerHour"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
)
FABRIC = CrdInfo(
    kind="Fabric", plural="fabrics", singular="fabric", short_names=["fab"], scope="Cluster",
    spec=FabricSpec, status=None,
    printer_columns=[{"name": "Pool", "type": "string", "jsonPath": ".spec.addressPool"},
                     {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
)
RESOURCES = (ELASTIC_INFERENCE, FABRIC)
API_VERSION = f"{GROUP}/{VERSION}"
