"""The exact MILP reference (solver/exact.py) against exhaustive enumeration on random small problems, and
against the solver and both bounds on a zoo case (slow: a MILP solve of a real model)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from elasticdf_partitioner.catalog import Limits
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.models.synthetic import chain, toy_cluster
from elasticdf_partitioner.resources import Resources
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.solver.colgen import ColumnBound
from elasticdf_partitioner.solver.exact import exact_optimum
from elasticdf_partitioner.solver.pack import PackSettings
from elasticdf_partitioner.solver.stages import build_pipeline
from elasticdf_partitioner.zoo import load_model
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reference_packing import best_total_fps
from test_solver_exactness import LIMITS, layers

CLUSTERS = Path(__file__).parents[2] / "examples" / "clusters"
# up to three SLRs per card, so walks that would turn back on a card are possible
cards = st.lists(st.tuples(st.lists(st.integers(40, 160), min_size=1, max_size=3), st.integers(0, 2)),
                 min_size=1, max_size=2)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=layers, cards=cards, sll=st.sampled_from([40, 5000]), skip=st.booleans(), exclusive=st.booleans())
# the only fit walks SLR 0 -> 1 -> 0, which the placement rules forbid (a walk on a card goes one way)
@example(layers=[[(100, Resources(60, 0, 0, 0, 0), 8)], [(100, Resources(90, 0, 0, 0, 0), 8)],
                 [(100, Resources(60, 0, 0, 0, 0), 8)]], cards=[([130, 100], 0)], sll=5000, skip=False, exclusive=False)
def test_exact_model_matches_enumeration(layers, cards, sll, skip, exclusive):
    graph = chain("rand", layers, [(0, 2)] if skip and len(layers) == 3 else [])
    cluster = toy_cluster([c[0] for c in cards], [min(c[1], len(c[0]) - 1) for c in cards], sll=sll)
    pipeline = build_pipeline(graph)
    expected = best_total_fps(pipeline, cluster, LIMITS, exclusive)
    result = exact_optimum(pipeline, cluster, LIMITS, PackSettings(exclusive_cards=exclusive), time_limit=60)
    assert result.optimal
    assert result.fps == pytest.approx(expected, rel=1e-6, abs=0.01)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=layers, cards=cards, sll=st.sampled_from([40, 5000]), skip=st.booleans(), same_type=st.booleans())
def test_lp_bound_is_never_below_the_exact_optimum(layers, cards, sll, skip, same_type):
    graph = chain("rand", layers, [(0, 2)] if skip and len(layers) == 3 else [])
    cluster = toy_cluster([c[0] for c in cards], [min(c[1], len(c[0]) - 1) for c in cards], sll=sll)
    if same_type:  # cards of one type share the LP's slots: runs on the same SLR of two cards
        cluster = dataclasses.replace(cluster, cards=[dataclasses.replace(c, type=cluster.cards[0].type)
                                                      for c in cluster.cards])
    pipeline = build_pipeline(graph)
    exact = exact_optimum(pipeline, cluster, LIMITS, time_limit=60)
    assert exact.optimal
    assert ColumnBound(pipeline, cluster, LIMITS).bound() >= exact.fps * (1 - 1e-6) - 1e-6


@pytest.mark.slow
def test_exact_optimum_brackets_the_plan_on_cnv():
    graph = load_model("cnv")
    cluster = load_cluster(CLUSTERS / "1xU280.yaml")
    plan = solve(graph, cluster, certify=True)
    result = exact_optimum(build_pipeline(graph), cluster, Limits(), time_limit=300)
    assert plan.total_fps <= result.bound * (1 + 1e-6)  # the plan is feasible in the exact model
    assert result.fps <= plan.bound * (1 + 1e-6)  # a feasible MILP solution never beats a proven bound
