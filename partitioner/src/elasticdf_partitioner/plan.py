"""The plan (DESIGN §5.3): instances, their segments on cards and SLRs, predicted fps/latency/cost.

Every number is a prediction of the cost model, never a measurement.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Segment(BaseModel):
    node: str
    card: int = Field(description="index of the card on its node")
    card_type: str
    slrs: list[int]
    layers: list[str] = Field(description="[first, last] layer names of the contiguous run")
    layer_range: list[int] = Field(description="[first, last] layer indices (topological order)")
    ingress_gbps: float
    egress_gbps: float
    resources: dict[str, float]
    utilisation: dict[str, float] = Field(description="share of the segment's SLRs (capacity after shell IP)")
    slr_layers: dict[str, list[int]] = Field(description="per SLR: [first, last] layer index placed on it")
    folding: dict[str, dict] = Field(default_factory=dict, description="FINN folding config of its layers")


class Instance(BaseModel):
    fps: float
    fclk_mhz: float
    build_fclk_mhz: float | None = Field(None, description="the clock its card builds are synthesised for, where "
                                                           "fclk_mhz is what a build achieved (None: fclk_mhz)")
    cycles_per_frame: int
    latency_ms: float
    segments: list[Segment]


class Clock(BaseModel):
    mhz: float
    source: str = Field(description="where the clock came from: 'modelled default' (cards.yaml), a catalog "
                                    "override, or a measured value (e.g. --clock, a build report)")
    build_mhz: float | None = Field(None, description="the clock card builds are synthesised for, where mhz is "
                                                      "what a build achieved (None: mhz)")


class Plan(BaseModel):
    objective: str
    model: str
    fclk_mhz: float = Field(description="the lowest clock in the plan")
    instances: list[Instance]
    total_fps: float
    cards_used: int
    cost_per_hour: float
    fps_per_dollar_hour: float
    solve_seconds: float
    bound: float | None = Field(description="proven upper bound on total fps for this cluster, or null")
    optimal: bool = Field(description="true when the search space of the solver's model was fully explored "
                                      "or the plan reaches its proven bound")
    bound_method: str = Field("resource", description="'resource': per-resource fps per unit bound; 'lp': the LP "
                                                      "over instance configurations (--certify)")
    min_instance_fps: float | None = Field(None, description="latency floor: no instance is slower than this")
    clocks: dict[str, Clock] = Field(default_factory=dict, description="per card type in the cluster: the "
                                                                       "kernel clock the plan used, and its source")
    resource_scale: dict[str, dict[str, float]] = Field(default_factory=dict, description="per card type whose "
        "builds reported other resources than estimated: used / estimated per kind (capacity was divided by it)")
    folding: dict[str, dict] = Field(default_factory=dict, description="FINN folding config of instance 0")
    latency_model: str = (
        "latency = sum over stages of cycles/fclk (FINN critical path, pessimistic: no overlap between layers) "
        "+ per card hop: 1.07 us VNx RTT/2 + bits per frame / 100 Gb/s"
    )
