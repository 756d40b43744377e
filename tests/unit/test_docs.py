"""Generated docs are current (docs/crd-reference.md, charts/elastic-df/crds) and the operations guide
documents every condition and event reason the operator sets."""

from __future__ import annotations

import re
from pathlib import Path

from elasticdf_operator import docgen
from elasticdf_operator.api import CONDITION_TYPES

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "operator" / "src" / "elasticdf_operator"


def test_generated_docs_and_chart_crds_are_current():
    for rel, text in docgen.files().items():
        path = ROOT / rel
        assert path.exists() and path.read_text() == text, f"{rel} is stale: python -m elasticdf_operator.docgen"


def test_reference_notes_name_existing_fields():
    assert docgen.note_keys_missing() == []


def test_reference_lists_every_spec_field():
    text = (ROOT / docgen.REFERENCE).read_text()
    for field in ("spec.model.name", "spec.autoscaling.targetFPS", "spec.placement.cardTypes", "spec.runtime.mode",
                  "status.fpsPerDollarHour", "spec.addressPool"):
        assert f"`{field}`" in text, field


def reasons_in_code() -> set[str]:
    """Condition reasons and event reasons the operator writes (literal tuples in its modules)."""
    found = set()
    for name in ("decide.py", "status.py", "reconcile.py", "autoscale.py", "handlers.py"):
        src = (OPERATOR / name).read_text()
        found |= set(re.findall(r'"(?:True|False|Normal|Warning)", "([A-Z][A-Za-z]+)"', src))
        for a, b in re.findall(r'"([A-Z][A-Za-z]+)" if \w+ else "([A-Z][A-Za-z]+)"', src):
            found |= {a, b}
    return found


def test_operations_guide_documents_every_reason():
    guide = (ROOT / "docs" / "operations.md").read_text()
    reasons = reasons_in_code()
    assert {"Solved", "PartitionInfeasible", "InsufficientCards", "WiringConsistent", "GroupPlaced"} <= reasons
    missing = sorted(r for r in reasons if f"`{r}`" not in guide)
    assert not missing, f"docs/operations.md does not explain reason(s) {missing}"
    for type_ in CONDITION_TYPES:
        assert f"| {type_} |" in guide, type_


def test_metrics_example_shows_every_operator_metric():
    from elasticdf_operator import metrics
    from prometheus_client.metrics import MetricWrapperBase

    example = (ROOT / "docs" / "metrics-example.txt").read_text()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            assert f"# TYPE {obj._name}" in example, f"{obj._name} missing: .venv/bin/python docs/metrics_example.py"
