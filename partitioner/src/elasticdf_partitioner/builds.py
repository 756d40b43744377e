"""Card builds of a plan (pure): the BuildRecord of every card, the unit a builder makes one artifact for.

A card runs one build: the segments of the instances it hosts (layer ranges, SLRs, floorplan), their folding,
its card type and the lowest clock of those instances, identified by `BuildRecord.content_digest`. Which
instances they are is not part of it, so every card doing the same work shares one build (docs/builds.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from elasticdf_contract.builds import (
    RECORD_FILE,
    REPORT_FILE,
    REPORT_RESOURCES,
    BuildRecord,
    BuildReport,
    segment_order,
)
from pydantic import BaseModel, ValidationError

from .errors import InputError
from .plan import Instance, Plan
from .zoo import ZOO_SCHEME

ZOO_IDENTITY, ONNX_IDENTITY = "zoo:", "onnx:"
_Doc = TypeVar("_Doc", bound=BaseModel)


def model_identity(name: str | None = None, onnx: str | None = None) -> str:
    """What a build's digest says about the model: `zoo:NAME` or `onnx:URI` (the artifact's URI as given)."""
    return f"{ZOO_IDENTITY}{name}" if name else f"{ONNX_IDENTITY}{onnx}"


def reference_identity(reference: str) -> str:
    """The identity of a model reference: a zoo name or zoo:// URI, else an ONNX file's path or URI (https://,
    oci://REG/REPO@sha256:..., file://, pvc://)."""
    if reference.startswith(ZOO_SCHEME) or ("://" not in reference and not reference.lower().endswith(".onnx")):
        return model_identity(name=reference.removeprefix(ZOO_SCHEME))
    return model_identity(onnx=reference)


def identity_reference(identity: str) -> str:
    """The model reference (zoo:// URI, or the ONNX URI) an identity names: where a builder gets the model."""
    if identity.startswith(ZOO_IDENTITY):
        return ZOO_SCHEME + identity.removeprefix(ZOO_IDENTITY)
    return identity.removeprefix(ONNX_IDENTITY)


def card_records(model: str, instances: list[Instance]) -> dict[tuple[str, int], BuildRecord]:
    """(node, card) -> the BuildRecord of every card the instances use, in order of first use."""
    hosted: dict[tuple[str, int], list] = {}
    for inst in instances:
        for seg in inst.segments:
            hosted.setdefault((seg.node, seg.card), []).append((inst, seg))
    return {card: _record(model, segs) for card, segs in hosted.items()}


def _record(model: str, hosted: list) -> BuildRecord:
    # sorted by content so the digest does not depend on which instance came first
    segments = sorted(({"layers": s.layer_range, "slrs": s.slrs, "floorplan": s.slr_layers} for _, s in hosted),
                      key=lambda d: segment_order(**d))
    folding = {name: cfg for _, s in hosted for name, cfg in sorted(s.folding.items())}
    card_type = hosted[0][1].card_type
    fclk = min(inst.build_fclk_mhz or inst.fclk_mhz for inst, _ in hosted)  # the target, not an achieved clock
    digest = BuildRecord.content_digest(model, card_type, fclk, segments, folding)
    estimate = {REPORT_RESOURCES[kind]: round(sum(s.resources.get(kind, 0.0) for _, s in hosted), 1)
                for kind in REPORT_RESOURCES}
    return BuildRecord(digest=digest, model=model, card_type=card_type, fclk_mhz=fclk, segments=segments,
                       folding=folding, resources=estimate)


def plan_builds(model: str, plan: Plan) -> list[BuildRecord]:
    """The distinct builds of a plan (one per digest), in order of first use."""
    return list({r.digest: r for r in card_records(model, plan.instances).values()}.values())


def read_reports(directory: str | Path) -> list[tuple[BuildRecord, BuildReport]]:
    """(record, report) of every report.json below `directory` with its build.json beside it (as a builder writes
    an artifact)."""
    pairs = []
    for path in sorted(Path(directory).rglob(REPORT_FILE)):
        report = read_document(BuildReport, path)
        record = read_document(BuildRecord, path.with_name(RECORD_FILE))
        if record.digest != report.digest:
            raise InputError(str(path), f"reports build {report.digest} but {RECORD_FILE} beside it is build "
                             f"{record.digest}")
        pairs.append((record, report))
    if not pairs:
        raise InputError(str(directory), f"no {REPORT_FILE} with a {RECORD_FILE} beside it found below it")
    return pairs


def lowest_clocks(reports: list[tuple[BuildRecord, BuildReport]]) -> dict[str, tuple[float, str, float]]:
    """Card type -> (clock MHz, its source, the clock that build targeted): per card type the lowest clock its
    builds report, which every build of that type reached (input of catalog.with_clocks)."""
    found: dict[str, tuple[float, str, float]] = {}
    for record, report in reports:
        source = f"{report.clock_source} (build report {report.mode}, {report.digest[:19]})"
        if record.card_type not in found or report.clock_mhz < found[record.card_type][0]:
            found[record.card_type] = (report.clock_mhz, source, record.fclk_mhz)
    return found


def resource_scales(reports: list[tuple[BuildRecord, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Card type -> {resource kind: used / estimated}: per card type and kind the largest ratio of what a build
    reports using (its report's `resources`) to what the cost model estimated for it (its record's), input of
    catalog.with_resource_scale. Kinds a build did not report, or with nothing estimated, are left out, and so
    are differences within rounding (1 unit or 1 %)."""
    found: dict[str, dict[str, float]] = {}
    for record, resources in reports:
        for kind, name in REPORT_RESOURCES.items():
            estimated, used = record.resources.get(name, 0.0), resources.get(name)
            if estimated > 0 and used is not None and abs(used - estimated) > max(1.0, 0.01 * estimated):
                ratios = found.setdefault(record.card_type, {})
                ratios[kind] = max(ratios.get(kind, 0.0), round(used / estimated, 3))
    return found


def read_document(model: type[_Doc], path: Path) -> _Doc:
    """A JSON file as a contract model; missing or invalid: an InputError naming the file and field."""
    try:
        return model.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"{path}: {'.'.join(map(str, first['loc']))}", first["msg"]) from None


def hosted_ranges(record: BuildRecord) -> str:
    """The layer ranges a build hosts, for people: "0-18 x24" for 24 replicas of one range."""
    counts: dict[str, int] = {}
    for seg in record.segments:
        key = f"{seg.layers[0]}-{seg.layers[1]}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(key if n == 1 else f"{key} x{n}" for key, n in counts.items())
