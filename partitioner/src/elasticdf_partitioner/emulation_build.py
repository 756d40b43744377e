"""The emulation builder: a build bundle -> the artifact files card pods run without a bitstream.

For every distinct hosted layer range it writes `segment-<first>-<last>.onnx`: the whole model made runnable
(modelio.runnable_model: FINN semantics lowered to standard ONNX) cut where the plan cut it
(segment_cut.cut, the same cut a card pod makes without a build), so chaining the segments computes what the
unsplit model computes, bit for bit. `report.json` states the modelled clock (the record's) and the cost
model's resources of the hosted layers at the record's folding; nothing is measured.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path

from elasticdf_contract.builds import (
    RECORD_FILE,
    REPORT_FILE,
    REPORT_RESOURCES,
    BuildRecord,
    BuildReport,
    segment_file,
)

from .bundle import dataflow_file, layer_ranges, read_bundle
from .errors import InputError
from .graph import ModelGraph

# the cost model's resource kinds under the names FINN's estimate reports use


def hosted_resources(record: BuildRecord, graph: ModelGraph) -> dict[str, float]:
    """What the card's segments use at the record's folding (cost model), summed over every hosted segment."""
    from .resources import Resources

    graph.apply_folding_config(record.folding)
    total = Resources()
    for seg in record.segments:
        first, last = seg.layers
        for layer in graph.layers[first:last + 1]:
            total = total + layer.current().res
    return {REPORT_RESOURCES[kind]: round(value, 1) for kind, value in total.as_dict().items()}


def run_emulation_build(bundle_dir: str | Path, out_dir: str | Path, model: str | None = None) -> BuildReport:
    """Build the bundle in `bundle_dir` into `out_dir` (build.json, report.json, segment-<a>-<b>.onnx); the model
    is the bundle's (bundle.json) unless `model` names another copy of it (a local path, say)."""
    import onnx

    from .modelio import fetched_reference, model_graph, runnable_model
    from .segment_cut import cut, layer_names

    started = time.monotonic()
    record, index = read_bundle(bundle_dir)
    reference = fetched_reference(model or index["model"], None if model else index.get("sha256"))
    runnable = runnable_model(reference)
    _check_same_layers(layer_names(runnable), record, Path(bundle_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for first, last in layer_ranges(record):
        onnx.save(cut(runnable, first, last), str(out / segment_file(first, last)))
        files.append(segment_file(first, last))
    resources = hosted_resources(record, model_graph(reference))
    report = BuildReport(digest=record.digest, mode="emulation", clock_mhz=record.fclk_mhz, clock_source="modelled",
                         resources=resources, files=files,
                         builder=f"elasticdf-emulation {version('elasticdf-partitioner')}",
                         seconds=round(time.monotonic() - started, 3))
    (out / RECORD_FILE).write_text(json.dumps(record.model_dump(by_alias=True), indent=2) + "\n")
    (out / REPORT_FILE).write_text(json.dumps(report.model_dump(by_alias=True), indent=2) + "\n")
    return report


def _check_same_layers(names: list[str], record: BuildRecord, bundle: Path) -> None:
    """The model built is the one bundled: each hosted range holds the same FINN nodes in both."""
    import onnx

    for first, last in layer_ranges(record):
        bundled = [n.name for n in onnx.load(str(bundle / dataflow_file(first, last))).graph.node]
        if names[first:last + 1] != bundled:
            raise InputError(f"{bundle / dataflow_file(first, last)}", f"layers {first}..{last} of the model are "
                             f"{names[first:last + 1][:3]}..., the bundle's are {bundled[:3]}...: not the bundled "
                             "model")
