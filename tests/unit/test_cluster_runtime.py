"""The cluster description's `runtime` field (kwok | real): the partitioner accepts it and plans real nodes'
cards like any others; a wrong value names the node's field and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clusters" / "real-nodes.yaml"


def test_real_nodes_are_planned_like_kwok_nodes():
    cluster = load_cluster(EXAMPLE)
    assert sorted(c.type.name for c in cluster.cards) == ["u250", "u280", "u280", "u280", "u280", "u280"]


def test_unknown_runtime_names_the_field(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("nodes:\n  - {name: a, cards: [u280], runtime: docker}\n")
    with pytest.raises(InputError, match=r"nodes\.0\.runtime.*'kwok' or 'real'"):
        load_cluster(path)
