"""Segment wiring (DESIGN §5.5): what the operator tells each card pod and the segment runtime reads.

A card pod runs its card's build: every segment the plan puts on that card, of one or several instances.
The operator writes one CardWiring per card as JSON (group ConfigMap key `card-<j>.json`, mounted into the
pod, path also in env ELASTICDF_WIRING); it lists one SegmentWiring per hosted segment, each with its own
data endpoint (emulation: one TCP port per segment; xrt: one UDP socket-table entry on the card's QSFP).
An instance is a chain of segments across card pods: the first segment receives from the gateway, the last
returns to it; every other segment receives from the previous segment and sends to the next.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field, model_validator

Mode = Literal["xrt", "emulation"]


class Endpoint(BaseModel):
    """A data address. xrt: a card's QSFP port (ip, mac, udp port); emulation/gateway: host name + port."""

    kind: Literal["qsfp", "pod", "gateway"]
    host: str | None = Field(None, description="DNS name (pod, gateway)")
    ip: str | None = Field(None, description="IPv4 of the QSFP port (xrt)")
    mac: str | None = None
    port: int = Field(ge=1, le=65535, description="UDP port (xrt) or TCP port (emulation, gateway)")

    @model_validator(mode="after")
    def _addressed(self) -> Endpoint:
        if self.host is None and self.ip is None:
            raise ValueError("an endpoint needs a host or an ip")
        return self


class Artifacts(BaseModel):
    onnx: str | None = Field(None, description="URI of the model ONNX (spec.model.artifacts.onnx, or zoo://NAME); "
                             "the segment fetches it with elasticdf_partitioner.artifacts and cuts its layer range")
    onnx_sha256: str | None = Field(None, description="its digest (spec.model.artifacts.sha256)")
    xclbin: str | None = Field(None, description="URI of this segment's bitstream (xrt)")
    build: str | None = Field(None, description="the card build artifact the pod pulled into BUILD_DIR "
                              "(oci://REGISTRY/elasticdf/builds@sha256:MANIFEST, docs/builds.md): the segment loads "
                              "its segment-<first>-<last>.onnx (emulation) or card.xclbin (xrt) from there")


class SegmentWiring(BaseModel):
    instance_id: str = Field(description="<namespace>/<name>-<instance index>")
    instance: int = Field(ge=0)
    segment: int = Field(ge=0)
    segments: int = Field(ge=1)
    mode: Mode
    model: str
    node: str
    card: int = Field(ge=0, description="index of the card on its node")
    card_type: str
    slrs: list[int]
    layer_range: list[int] = Field(min_length=2, max_length=2, description="[first, last] layer index")
    layers: list[str] = Field(description="[first, last] layer names")
    artifacts: Artifacts = Field(default_factory=Artifacts)
    listen: Endpoint = Field(description="this segment's data address")
    upstream: Endpoint = Field(description="who sends to this segment (previous segment or gateway)")
    downstream: Endpoint = Field(description="where this segment sends (next segment or gateway)")

    @model_validator(mode="after")
    def _in_range(self) -> SegmentWiring:
        if self.segment >= self.segments:
            raise ValueError(f"segment {self.segment} out of range (segments={self.segments})")
        return self

    @property
    def first(self) -> bool:
        return self.segment == 0

    @property
    def last(self) -> bool:
        return self.segment == self.segments - 1


def check_chain(wirings: list[SegmentWiring]) -> list[str]:
    """Problems in one instance's wiring (empty when segment i sends exactly where segment i+1 listens)."""
    problems = []
    ordered = sorted(wirings, key=lambda w: w.segment)
    if [w.segment for w in ordered] != list(range(len(ordered))):
        problems.append(f"segments {[w.segment for w in ordered]} are not 0..{len(ordered) - 1}")
    for a, b in zip(ordered, ordered[1:]):
        if a.downstream != b.listen:
            problems.append(f"segment {a.segment} sends to {a.downstream} but {b.segment} listens on {b.listen}")
        if b.upstream != a.listen:
            problems.append(f"segment {b.segment} expects {b.upstream} but {a.segment} listens on {a.listen}")
    if ordered and (ordered[0].upstream.kind != "gateway" or ordered[-1].downstream.kind != "gateway"):
        problems.append("the first segment must receive from the gateway and the last return to it")
    return problems


class CardWiring(BaseModel):
    """One card's build and the segments it hosts (what one card pod runs)."""

    node: str
    card: int = Field(ge=0, description="index of the card on its node")
    card_type: str
    mode: Mode
    build: str = Field(description="content digest of the card build (bitstream or runnable bundle)")
    segments: list[SegmentWiring] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_card(self) -> CardWiring:
        ports = [w.listen.port for w in self.segments]
        if len(set(ports)) != len(ports):
            raise ValueError(f"hosted segments share a data port: {ports}")
        if any((w.node, w.card) != (self.node, self.card) for w in self.segments):
            raise ValueError("every hosted segment must name this card")
        return self

    @classmethod
    def of_segment(cls, wiring: SegmentWiring) -> CardWiring:
        """A card hosting one segment (a SegmentWiring file given to the runtime as it is)."""
        return cls(node=wiring.node, card=wiring.card, card_type=wiring.card_type, mode=wiring.mode,
                   build="", segments=[wiring])


def load_card(text: str) -> CardWiring:
    """A CardWiring JSON, or a single SegmentWiring JSON as a one-segment card."""
    data = json.loads(text)
    if isinstance(data.get("segments"), list):
        return CardWiring.model_validate(data)
    return CardWiring.of_segment(SegmentWiring.model_validate(data))
