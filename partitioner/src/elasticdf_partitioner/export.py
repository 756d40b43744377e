"""FINN-side outputs of a plan: folding config and per-card floorplan JSON that FINN's ApplyConfig and
Floorplan transformations accept (keys slr, partition_id, device_id, mem_port per node)."""

from __future__ import annotations

import json
from pathlib import Path

from .graph import ModelGraph
from .plan import Plan


def floorplan_nodes(slr_layers: dict[str, list[int]], names: list[str], **attrs: object) -> dict[str, dict]:
    """FINN floorplan entries of one segment: node -> {slr, partition_id, **attrs}, each SLR part a partition."""
    return {name: {"slr": int(slr), "partition_id": partition_id, **attrs}
            for partition_id, (slr, (first, last)) in enumerate(slr_layers.items()) for name in names[first:last + 1]}


def floorplans(plan: Plan, graph: ModelGraph) -> dict[str, dict]:
    """file name -> floorplan dict, one per (instance, card). device_id numbers the instance's cards."""
    names = [layer.name for layer in graph.layers]
    files = {}
    for i, instance in enumerate(plan.instances):
        for device_id, segment in enumerate(instance.segments):
            config: dict = {"Defaults": {"slr": [-1, ["all"]], "partition_id": [0, ["all"]],
                                         "device_id": [device_id, ["all"]], "mem_port": ["", ["all"]]},
                            **floorplan_nodes(segment.slr_layers, names, device_id=device_id, mem_port="")}
            files[f"instance{i}/floorplan_{segment.node}-card{segment.card}.json"] = config
    return files


def write_finn_outputs(plan: Plan, graph: ModelGraph, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    written = []
    files = {"folding_config.json": {"Defaults": {}, **plan.folding}, **floorplans(plan, graph)}
    for name, content in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
        written.append(path)
    return written
