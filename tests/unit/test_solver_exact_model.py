"""The exact MILP reference (solver/exact.py) against exhaustive enumeration on random small problems, the
LP bound against it, and (slow) the solver and both bounds against it on problems enumeration cannot reach; the
search over multisets of instance levels (solver/exact_search.py) against enumeration and (slow) the MILP."""

from __future__ import annotations

import pytest
from elasticdf_partitioner.errors import InfeasibleError
from elasticdf_partitioner.models.synthetic import chain, toy_cluster
from elasticdf_partitioner.resources import Resources
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.solver.colgen import ColumnBound
from elasticdf_partitioner.solver.exact import exact_optimum
from elasticdf_partitioner.solver.exact_search import exact_search
from elasticdf_partitioner.solver.pack import PackSettings
from elasticdf_partitioner.solver.stages import build_pipeline
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from reference_packing import best_total_fps
from test_solver_exactness import LIMITS, layers, of_one_type

MILP_SECONDS = 120  # what the level-search test gives the MILP reference on each problem

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
        cluster = of_one_type(cluster)
    pipeline = build_pipeline(graph)
    exact = exact_optimum(pipeline, cluster, LIMITS, time_limit=60)
    assert exact.optimal
    assert ColumnBound(pipeline, cluster, LIMITS).bound() >= exact.fps * (1 - 1e-6) - 1e-6


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(st.tuples(st.sampled_from([400, 800]), st.integers(15, 45), st.integers(10, 40)),
                       min_size=9, max_size=12),
       slrs=st.lists(st.integers(100, 200), min_size=2, max_size=3))
def test_exact_optimum_lies_between_the_plan_and_every_bound(stages, slrs):
    """Past enumeration's reach (9-12 stages, several instances): plan <= optimum <= LP and resource bounds."""
    graph = chain("medium", [[(c, Resources(lut, 0, 0, 0, dsp), 8), (c // 2, Resources(2 * lut, 0, 0, 0, dsp), 16),
                              (c // 2, Resources(lut, 0, 0, 0, 2 * dsp), 16)] for c, lut, dsp in stages])
    cluster = toy_cluster([slrs], [0])
    pipeline = build_pipeline(graph)
    exact = exact_optimum(pipeline, cluster, LIMITS, time_limit=300)
    assert exact.optimal
    try:
        plan = solve(graph, cluster, limits=LIMITS)
    except InfeasibleError:
        assert exact.fps == 0  # the solver may only give up where nothing fits
        return
    assert plan.total_fps <= exact.fps * (1 + 1e-6)
    assert exact.fps <= min(plan.bound, ColumnBound(pipeline, cluster, LIMITS).bound()) * (1 + 1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=layers, cards=cards, sll=st.sampled_from([40, 5000]), skip=st.booleans(), exclusive=st.booleans())
@example(layers=[[(100, Resources(60, 0, 0, 0, 0), 8)], [(100, Resources(90, 0, 0, 0, 0), 8)],
                 [(100, Resources(60, 0, 0, 0, 0), 8)]], cards=[([130, 100], 0)], sll=5000, skip=False, exclusive=False)
def test_level_search_matches_enumeration(layers, cards, sll, skip, exclusive):
    """The search over multisets of levels (exact_search.py), from no incumbent, proves the enumerated optimum."""
    graph = chain("rand", layers, [(0, 2)] if skip and len(layers) == 3 else [])
    cluster = toy_cluster([c[0] for c in cards], [min(c[1], len(c[0]) - 1) for c in cards], sll=sll)
    pipeline = build_pipeline(graph)
    expected = best_total_fps(pipeline, cluster, LIMITS, exclusive)
    result = exact_search(pipeline, cluster, 0.0, limits=LIMITS, settings=PackSettings(exclusive_cards=exclusive))
    assert result.optimal
    assert result.fps == pytest.approx(expected, rel=1e-6, abs=0.01)
    assert result.bound == pytest.approx(result.fps)


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(st.tuples(st.sampled_from([400, 800]), st.integers(15, 45), st.integers(10, 40)),
                       min_size=6, max_size=10),
       slrs=st.lists(st.lists(st.integers(100, 200), min_size=2, max_size=3), min_size=1, max_size=2),
       from_plan=st.booleans())
def test_level_search_agrees_with_the_exact_model(stages, slrs, from_plan):
    """Past enumeration's reach (exact_bench's random problems): the level search and the whole MILP prove the
    same optimum, from no incumbent or from the solver's plan."""
    graph = chain("medium", [[(c, Resources(lut, 0, 0, 0, dsp), 8), (c // 2, Resources(2 * lut, 0, 0, 0, dsp), 16),
                              (c // 2, Resources(lut, 0, 0, 0, 2 * dsp), 16)] for c, lut, dsp in stages])
    cluster = toy_cluster(slrs, [0] * len(slrs))
    pipeline = build_pipeline(graph)
    exact = exact_optimum(pipeline, cluster, LIMITS, time_limit=MILP_SECONDS)
    # a reference only where the MILP proves its optimum: on two cards SCIP took more than 300 s on some problems
    # (stages of 19-45 LUTs on SLRs of 126-184), more so on a loaded machine
    assume(exact.optimal)
    incumbent = 0.0
    if from_plan:
        try:
            incumbent = solve(graph, cluster, limits=LIMITS).total_fps
        except InfeasibleError:
            pass
    result = exact_search(pipeline, cluster, incumbent, limits=LIMITS, time_limit=600)
    assert result.optimal
    assert result.fps == pytest.approx(exact.fps, rel=1e-6, abs=0.01)
