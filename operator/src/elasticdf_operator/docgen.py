"""Generated files outside crds/: `python -m elasticdf_operator.docgen [--check]`.

- docs/crd-reference.md: the field reference of every custom resource, from the same structural schema
  crdgen writes into the CRDs (so the doc shows what the API server validates).
- charts/elastic-df/crds/*.yaml: byte-identical copies of crdgen's output for the Helm chart.

`--check` writes nothing and exits 1 when a file is stale (tests/unit/test_docs.py runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import GROUP, VERSION, crdgen
from .api import CONDITION_TYPES, RESOURCES, CrdInfo

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = Path("docs/crd-reference.md")
CHART_CRDS = Path("charts/elastic-df/crds")

# What the schema does not say by itself (fields without a description in api.py). Keys must be paths
# of the schema: a unit test fails when a key no longer names a field.
NOTES: dict[str, str] = {
    "ElasticInference.spec.model.artifacts": "fetched by the operator (to plan) and by every segment pod (to run); "
                                             "failures: PartitionSolved=False with reason ModelFetchFailed, "
                                             "ModelInvalid or InvalidSpec (docs/operations.md)",
    "ElasticInference.spec.objective": "what the partitioner optimises per instance; `cost` needs targetFPS "
                                        "(or autoscaling.targetFPS), else it falls back to `throughput`",
    "ElasticInference.spec.targetFPS": "total fps wanted; each instance aims at targetFPS / replicas",
    "ElasticInference.spec.autoscaling": "the built-in autoscaler; when set, replicas is clamped to "
                                          "[minReplicas, maxReplicas] and the autoscaler writes it",
    "ElasticInference.spec.autoscaling.minReplicas": "lower bound of spec.replicas",
    "ElasticInference.spec.autoscaling.maxReplicas": "upper bound of spec.replicas",
    "ElasticInference.spec.autoscaling.scaleUpStabilizationSeconds":
        "a scale-up goes to the lowest recommendation of this window",
    "ElasticInference.spec.autoscaling.scaleDownStabilizationSeconds":
        "a scale-down goes to the highest recommendation of this window",
    "ElasticInference.spec.placement": "where instances may go",
    "ElasticInference.spec.placement.maxSegmentsPerInstance": "at most this many cards (segments) per instance",
    "ElasticInference.spec.runtime": "how segment pods run",
    "ElasticInference.spec.runtime.mode": "`auto`: xrt on nodes labelled elasticdf.io/runtime=xrt, else "
                                          "emulation; `xrt`: real cards and the VNx 100G stack; `emulation`: "
                                          "CPU segments that stream over pod networking",
    "ElasticInference.spec.runtime.image": "container image of the segment pods",
    "ElasticInference.status.phase": "Running: Ready; Failed: nothing placed and PartitionSolved=False; "
                                     "Pending: nothing placed; Degraded: some instance ready; else Scheduling",
    "ElasticInference.status.conditions": f"one per type, in this order: {', '.join(CONDITION_TYPES)} "
                                          "(see docs/operations.md for every reason)",
    "ElasticInference.status.plan": "the placed instances: per instance its predicted fps and segments",
    "ElasticInference.status.replicas": "placed instances (the scale subresource's status.replicas)",
    "ElasticInference.status.readyReplicas": "instances whose segment pods are all Ready and which the gateways "
                                             "serve (in the cluster; an operator run outside it cannot ask them)",
    "ElasticInference.status.selector": "label selector of the segment pods (scale subresource)",
    "ElasticInference.status.predictedFPS": "sum of the placed instances' predicted fps (cost model)",
    "ElasticInference.status.observedFPS": "fps the autoscaler last read (gateway or segment /metrics, or the "
                                           "elasticdf.io/observed-fps annotation)",
    "ElasticInference.status.costPerHour": "sum of the catalog $/card-hour of the cards in use",
    "ElasticInference.status.fpsPerDollarHour": "predictedFPS / costPerHour",
    "ElasticInference.status.observedGeneration": "metadata.generation the status was computed for",
    "Fabric.spec.switches": "switches of the 100G fabric (default: one non-blocking switch)",
    "Fabric.spec.switches.uplinkGbps": "bandwidth of the switch's uplink",
    "Fabric.spec.switches.to": "the switch this one uplinks to (e.g. a spine)",
    "Fabric.spec.uplinks.gbps": "bandwidth of the node's link",
    "Fabric.spec.switches.name": "the name nodes refer to with their label elasticdf.io/switch",
    "Fabric.spec.uplinks": "not read by the operator yet: a node's switch is its label elasticdf.io/switch",
    "Fabric.spec.udpPort": "UDP port of the VNx stack; not read by the operator yet (segments use port 7000)",
}

_CONSTRAINTS = (("minimum", ">= {}"), ("maximum", "<= {}"), ("minLength", "length >= {}"),
                ("maxLength", "length <= {}"), ("minItems", "items >= {}"), ("maxItems", "items <= {}"),
                ("pattern", "matches `{}`"))


def _type(node: dict[str, Any] | bool) -> str:
    if isinstance(node, bool):  # additionalProperties: true (free-form values, e.g. a FINN folding config)
        return "any"
    kind = node.get("type", "any")
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node and "properties" not in node:
        return f"map[string]{_type(node['additionalProperties'])}"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    out = []
    if "enum" in node:
        out.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, fmt in _CONSTRAINTS:
        if key in node:
            value = node[key]
            if key in ("minimum", "maximum") and node.get(f"exclusive{key[0].upper()}{key[1:]}"):
                fmt = fmt.replace("=", "")
            out.append(fmt.format(value))
    items = node.get("items") or {}
    if "enum" in items:
        out.append("each one of " + ", ".join(f"`{v}`" for v in items["enum"]))
    for rule in node.get("x-kubernetes-validations", []):
        out.append(f"rule `{rule['rule']}` ({rule['message']})")
    return "; ".join(out)


def rows(node: dict[str, Any], prefix: str, required: bool = False) -> list[tuple[str, dict[str, Any], bool]]:
    """(dotted path, schema node, required) for `node` and every field below it, depth first."""
    out = [(prefix, node, required)]
    props = node.get("properties") or (node.get("items") or {}).get("properties")
    if props:
        parent = node if "properties" in node else node["items"]
        needed = set(parent.get("required", []))
        for name, sub in props.items():
            out += rows(sub, f"{prefix}.{name}", name in needed)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    return f"`{json.dumps(node['default'])}`"


def section(info: CrdInfo) -> list[str]:
    doc = crdgen.crd(info)
    version = doc["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    lines = [f"## {info.kind}", "",
             f"`apiVersion: {GROUP}/{VERSION}`, `kind: {info.kind}`, {info.scope.lower()}, plural "
             f"`{info.plural}`, short name{'s' if len(info.short_names) > 1 else ''} "
             f"{', '.join(f'`{s}`' for s in info.short_names)}."]
    subresources = version.get("subresources", {})
    if subresources:
        extra = []
        if "scale" in subresources:
            scale = subresources["scale"]
            extra.append(f"scale (`{scale['specReplicasPath']}`, `{scale['statusReplicasPath']}`, selector "
                         f"`{scale['labelSelectorPath']}`: `kubectl scale ei NAME --replicas N` works)")
        if "status" in subresources:
            extra.append("status")
        lines.append(f"Subresources: {'; '.join(reversed(extra))}.")
    columns = ", ".join(f"{c['name']} (`{c['jsonPath']}`)" for c in info.printer_columns)
    lines += [f"`kubectl get` columns: {columns}.", ""]
    for part in ("spec", "status"):
        if part not in schema:
            continue
        title = "Spec" if part == "spec" else "Status (written by the operator)"
        lines += [f"### {title}", "", "| Field | Type | Required | Default | Validation | Description |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for path, node, required in rows(schema[part], part, part == "spec")[1:]:
            key = f"{info.kind}.{path}"
            text = "; ".join(t for t in (node.get("description", ""), NOTES.get(key, "")) if t)
            lines.append(f"| `{path}` | {_type(node)} | {'yes' if required else ''} | {_cell(_default(node))} | "
                         f"{_cell(_constraints(node))} | {_cell(text)} |")
        lines.append("")
    return lines


def reference() -> str:
    lines = ["# CRD reference", "",
             "<!-- Generated by `python -m elasticdf_operator.docgen` from elasticdf_operator/api.py. "
             "Do not edit. -->", "",
             "Every field of the custom resources of Elastic-DF, generated from the pydantic models that also "
             "generate the CRDs (`crds/`, `charts/elastic-df/crds/`). The API server enforces the types, "
             "bounds, enums and rules below; the operator validates the same models again.", ""]
    for info in RESOURCES:
        lines += section(info)
    return "\n".join(lines).rstrip() + "\n"


def files() -> dict[Path, str]:
    out = {REFERENCE: reference()}
    out.update({CHART_CRDS / name: text for name, text in crdgen.files().items()})
    return out


def note_keys_missing() -> list[str]:
    """NOTES keys that name no field of the schema (a renamed or removed field)."""
    known = set()
    for info in RESOURCES:
        props = crdgen.crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        for part, node in props.items():
            known |= {f"{info.kind}.{path}" for path, _, _ in rows(node, part)}
    return sorted(set(NOTES) - known)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    parser.add_argument("--check", action="store_true", help="exit 1 when a file differs")
    args = parser.parse_args(argv)
    stale = crdgen.sync_files({args.root / rel: text for rel, text in files().items()}, args.check)
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run python -m elasticdf_operator.docgen)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
