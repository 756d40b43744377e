"""The Plan built from pattern copies: instances stamped from shared templates are complete, independent models."""

from __future__ import annotations

import gc

import pytest
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_partitioner.cluster import ClusterSpec, NodeSpec, cluster_from_spec
from elasticdf_partitioner.errors import InputError
from elasticdf_partitioner.plan import Plan
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.zoo import load_model


def test_copies_of_a_pattern_are_whole_plan_models_on_their_own_cards():
    cluster = cluster_from_spec(ClusterSpec(nodes=[NodeSpec(name=f"n-{i}", cards=["u280", "u250"])
                                                   for i in range(4)]), load_catalog())
    plan = solve(load_model("cnv"), cluster)
    assert Plan.model_validate_json(plan.model_dump_json()) == plan  # every field present and valid
    assert [i.model_dump(exclude_unset=True) for i in plan.instances] == [i.model_dump() for i in plan.instances]
    addresses = [(s.node, s.card) for i in plan.instances for s in i.segments]
    assert {(c.node, c.index) for c in cluster.cards} >= set(addresses)
    assert len({node for node, _ in addresses}) == 4, "the copies are spread over every node"
    assert plan.cards_used == len(set(addresses))
    first, second = plan.instances[0], plan.instances[-1]
    first.segments[0].node = "elsewhere"  # a copy is its own object: re-addressing one leaves the others
    assert second.segments[0].node != "elsewhere"


def test_solve_leaves_the_garbage_collector_as_it_found_it():
    """Planning pauses the cyclic GC (10^5 plan objects) and gives it back as it was, also on bad input."""
    cluster = cluster_from_spec(ClusterSpec(nodes=[NodeSpec(name="n", cards=["u280"])]), load_catalog())
    graph = load_model("cnv")
    assert gc.isenabled()
    solve(graph, cluster)
    assert gc.isenabled()
    with pytest.raises(InputError):
        solve(graph, cluster, objective="fastest")
    assert gc.isenabled()
    gc.disable()
    try:
        solve(graph, cluster)
        assert not gc.isenabled()
    finally:
        gc.enable()
