"""Card builds (docs/builds.md): what a card is flashed with, how a builder makes it and where it is stored.

A *card build* is everything one card runs: the segments the plan puts on it (layer ranges, SLRs, floorplan),
their FINN folding, the card type and the clock, identified by a content digest (`BuildRecord.digest`; the
instances it serves are not part of it, so all cards doing the same work share one build). A builder turns a
record into an *artifact* in an OCI registry, ORAS layout: one manifest with `artifactType` ARTIFACT_TYPE, the
empty config, one layer per file (media types below, file name in `org.opencontainers.image.title`), tagged
`build_tag(digest)` in BUILD_REPOSITORY. Card pods pull it by manifest digest and verify every blob, and that
the manifest's ANNOTATION_BUILD equals the build digest they were wired with, before flashing.

Files of an artifact:
- `build.json`  (MEDIA_RECORD)      the BuildRecord it was built from;
- `report.json` (MEDIA_REPORT)      the BuildReport: achieved clock, resources, how long it took;
- emulation: `segment-<first>-<last>.onnx` (MEDIA_SEGMENT_ONNX), one runnable standard-ONNX graph per distinct
  hosted layer range (lowered FINN semantics, symbolic batch);
- xrt: `card.xclbin` (MEDIA_XCLBIN), the bitstream of all hosted segments.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BUILD_REPOSITORY = "elasticdf/builds"
ARTIFACT_TYPE = "application/vnd.elasticdf.card-build.v1+json"
MEDIA_RECORD = "application/vnd.elasticdf.card-build.record.v1+json"
MEDIA_REPORT = "application/vnd.elasticdf.card-build.report.v1+json"
MEDIA_SEGMENT_ONNX = "application/vnd.elasticdf.segment.onnx"
MEDIA_XCLBIN = "application/vnd.xilinx.xclbin"
ANNOTATION_BUILD = "io.elasticdf.build"  # manifest annotation: the build digest ("sha256:...")
ANNOTATION_CLOCK = "io.elasticdf.clock-mhz"  # manifest annotation: the achieved clock the report states
ANNOTATION_RESOURCES = "io.elasticdf.resources"  # manifest annotation: the report's resources (JSON)
# the cost model's resource kinds -> the names builds report them by (Vivado's utilisation report)
REPORT_RESOURCES = {"lut": "LUT", "ff": "FF", "bram18": "BRAM_18K", "uram": "URAM", "dsp": "DSP"}
RECORD_FILE = "build.json"
REPORT_FILE = "report.json"
XCLBIN_FILE = "card.xclbin"
BUILD_DIR = "/var/lib/elasticdf/build"  # where a card pod's init container puts the pulled artifact
RECORD_ENV = "ELASTICDF_BUILD_RECORD"  # a builder Job's record (BuildRecord JSON) when no --record file is given


def segment_file(first: int, last: int) -> str:
    """Artifact file of the runnable graph of layers first..last (emulation)."""
    return f"segment-{first}-{last}.onnx"


def build_tag(digest: str) -> str:
    """The registry tag of a build: its digest's hex part (tags cannot hold ':')."""
    return digest.removeprefix("sha256:")


def segment_order(layers: list[int], slrs: list[int], floorplan: dict) -> str:
    """Sort key of a card's hosted segments: a build lists them by content (so its digest does not depend on
    which instance came first) and a card pod's wiring lists them in the same order, so the k-th kernel chain of
    a bitstream is the k-th hosted segment of the card pod."""
    return json.dumps({"layers": list(layers), "slrs": list(slrs), "floorplan": floorplan}, sort_keys=True)


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class RecordSegment(_Model):
    layers: list[int] = Field(min_length=2, max_length=2, description="[first, last] layer index")
    slrs: list[int] = Field(description="SLRs the segment spans, in order")
    floorplan: dict[str, list[int]] = Field(default_factory=dict, description="SLR -> [first, last] layer")


class BuildRecord(_Model):
    """What a card build is: computed by the planner from a plan, the input of a builder."""

    digest: str = Field(description="sha256 over the fields below but `resources` (content_digest)")
    model: str = Field(description="the model's identity: zoo:NAME or onnx:URI")
    card_type: str = Field(alias="cardType")
    fclk_mhz: float = Field(alias="fclkMhz", description="clock the build is synthesised for")
    segments: list[RecordSegment] = Field(min_length=1)
    folding: dict[str, dict] = Field(default_factory=dict, description="FINN folding config of its layers")
    resources: dict[str, float] = Field(default_factory=dict, description="what the cost model estimates its "
                                        "segments use (REPORT_RESOURCES names, summed): a report's resources are "
                                        "compared with it")

    @staticmethod
    def content_digest(model: str, card_type: str, fclk_mhz: float, segments: list[dict],
                       folding: dict[str, dict]) -> str:
        body = {"model": model, "cardType": card_type, "fclkMhz": fclk_mhz, "segments": segments,
                "folding": folding}
        return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


class BuildReport(_Model):
    """What a builder reports with its artifact (the next plan uses the clock)."""

    digest: str = Field(description="the build digest")
    mode: Literal["emulation", "xrt"]
    clock_mhz: float = Field(alias="clockMhz", description="achieved kernel clock")
    clock_source: Literal["modelled", "measured"] = Field(alias="clockSource")
    resources: dict[str, float] = Field(default_factory=dict, description="LUT, FF, BRAM_18K, URAM, DSP used")
    files: list[str] = Field(default_factory=list, description="artifact files besides build.json/report.json")
    builder: str = Field(description="builder name and version")
    seconds: float = Field(ge=0, description="wall-clock time of the build")
