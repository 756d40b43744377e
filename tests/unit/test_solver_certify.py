"""Issue 14: the LP bound over instance configurations, the latency floor and the clock as an input."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from elasticdf_partitioner.builds import plan_builds
from elasticdf_partitioner.catalog import load_catalog, with_clocks
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.errors import InputError
from elasticdf_partitioner.models.synthetic import chain, toy_cluster
from elasticdf_partitioner.resources import Resources
from elasticdf_partitioner.solver import colgen, solve
from elasticdf_partitioner.solver.colgen import ColumnBound, lp_bound
from elasticdf_partitioner.solver.exact import exact_optimum
from elasticdf_partitioner.solver.exact_search import LevelSearch
from elasticdf_partitioner.solver.pack import PackSettings
from elasticdf_partitioner.solver.stages import build_pipeline
from elasticdf_partitioner.zoo import load_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_packing import best_total_fps
from test_solver_exactness import LIMITS, cards, layers, of_one_type

CLUSTERS = Path(__file__).parents[2] / "examples" / "clusters"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=layers, cards=cards)
def test_lp_bound_is_never_below_the_exact_optimum(layers, cards):
    graph = chain("rand", layers)
    cluster = toy_cluster([c[0] for c in cards], [min(c[1], len(c[0]) - 1) for c in cards])
    pipeline = build_pipeline(graph)
    exact = best_total_fps(pipeline, cluster, LIMITS)
    assert ColumnBound(pipeline, cluster, LIMITS).bound() >= exact * (1 - 1e-6) - 1e-6
    if exact > 0:
        plan = solve(graph, cluster, limits=LIMITS, certify=True)
        assert plan.total_fps <= plan.bound + 0.01
        assert plan.total_fps == pytest.approx(exact, rel=1e-6, abs=0.01)  # these are searched exhaustively


def _without_instance_limits(bound: ColumnBound) -> ColumnBound:
    """The LP without the per-instance limit rows: no column exceeds an infinite limit."""
    bound.per_instance = {several: np.full_like(limit, np.inf) for several, limit in bound.per_instance.items()}
    return bound


# several stages of a LUT- and a DSP-leaning variant at two speeds, on up to two cards of up to three SLRs: the
# fast configurations need more than one SLR or card, which the per-instance limits are about
variant = st.tuples(st.sampled_from([100, 200, 400]), st.integers(10, 70), st.integers(0, 60), st.sampled_from([8, 32]))
stages = st.lists(st.lists(variant, min_size=1, max_size=3), min_size=2, max_size=4)
small_cards = st.lists(st.tuples(st.lists(st.integers(60, 160), min_size=1, max_size=3), st.integers(0, 2)),
                       min_size=1, max_size=2)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=stages, cards=small_cards, sll=st.sampled_from([40, 5000]), same_type=st.booleans(),
       max_cards=st.sampled_from([1, 2, 4]))
def test_lp_bound_with_instance_limits_is_proven_and_no_looser(stages, cards, sll, same_type, max_cards):
    graph = chain("rand", [[(c, Resources(lut, 0, 0, 0, dsp), w) for c, lut, dsp, w in stage] for stage in stages])
    cluster = toy_cluster([c[0] for c in cards], [min(c[1], len(c[0]) - 1) for c in cards], sll=sll)
    if same_type:  # their limit is per instance, not per card
        cluster = of_one_type(cluster)
    pipeline = build_pipeline(graph)
    pack = PackSettings(max_cards_per_instance=max_cards)
    found = exact_optimum(pipeline, cluster, LIMITS, pack, time_limit=30).fps  # feasible, if not proven optimal
    bound = ColumnBound(pipeline, cluster, LIMITS, pack).bound()
    assert bound >= found * (1 - 1e-6) - 1e-6
    assert lp_bound(pipeline, cluster, LIMITS, pack) >= found * (1 - 1e-6) - 1e-6
    looser = _without_instance_limits(ColumnBound(pipeline, cluster, LIMITS, pack)).bound()
    assert bound <= looser * (1 + 1e-3) + 1e-6  # the rounds stop within 1e-5 of the LP, or on a stall


def _middle_ethernet_pair(luts: list[int]):
    """Two cards of one type, three SLRs each, the Ethernet SLR in the middle (as a U55C)."""
    return of_one_type(toy_cluster([luts, luts], [1, 1]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(st.lists(variant, min_size=1, max_size=2), min_size=2, max_size=4),
       luts=st.lists(st.integers(40, 120), min_size=3, max_size=3))
def test_lp_bound_holds_where_the_ethernet_slr_is_in_the_middle(stages, luts):
    """The rows of what an instance uses off the Ethernet SLR: one side of it in its first and last run."""
    graph = chain("rand", [[(c, Resources(lut, 0, 0, 0, dsp), w) for c, lut, dsp, w in stage] for stage in stages])
    cluster = _middle_ethernet_pair(luts)
    pipeline = build_pipeline(graph)
    found = exact_optimum(pipeline, cluster, LIMITS, time_limit=30).fps  # feasible, if not proven optimal
    assert ColumnBound(pipeline, cluster, LIMITS).bound() >= found * (1 - 1e-6) - 1e-6


def test_an_instance_over_two_cards_gets_one_side_of_each_ethernet_slr():
    """Layers of 78, 49, 90 and 31 LUTs in order, on SLRs of 91, 65 (with the Ethernet IP) and 91 LUTs: no walk
    on one card fits them, and over two cards each run reaches its Ethernet SLR from one side, so gets one side
    of each card: no placement exists. The LP knows it; before it counted the sides a run can use, it pooled both
    cards' SLRs into 743,719 fps."""
    graph = chain("sides", [[(c, Resources(lut, 0, 0, 0, 0), 8)] for c, lut in [(200, 78), (100, 49), (100, 90),
                                                                                 (100, 31)]])
    cluster = _middle_ethernet_pair([91, 75, 91])
    pipeline = build_pipeline(graph)
    assert exact_optimum(pipeline, cluster, LIMITS, time_limit=30).fps == 0
    assert ColumnBound(pipeline, cluster, LIMITS).bound() == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(st.lists(variant, min_size=1, max_size=2), min_size=2, max_size=3),
       luts=st.lists(st.integers(60, 160), min_size=1, max_size=2), eth=st.integers(0, 1), count=st.integers(2, 4),
       max_cards=st.sampled_from([2, 4]))
def test_lp_bound_over_networked_cards_holds_on_up_to_four_cards(stages, luts, eth, count, max_cards):
    """lp_bound's split by how many cards the instances over several cards network, on 2-4 cards of one type."""
    graph = chain("rand", [[(c, Resources(lut, 0, 0, 0, dsp), w) for c, lut, dsp, w in stage] for stage in stages])
    cluster = of_one_type(toy_cluster([luts] * count, [min(eth, len(luts) - 1)] * count))
    pipeline = build_pipeline(graph)
    pack = PackSettings(max_cards_per_instance=max_cards)
    found = exact_optimum(pipeline, cluster, LIMITS, pack, time_limit=30).fps  # feasible, if not proven optimal
    assert lp_bound(pipeline, cluster, LIMITS, pack) >= found * (1 - 1e-6) - 1e-6


def _table(rows: list[list[tuple[int, int]]]):
    """A chain whose stages have these (cycles, LUTs) options."""
    return chain("table", [[(c, Resources(lut, 0, 0, 0, 0), 8) for c, lut in options] for options in rows])


def test_an_instance_over_several_cards_pays_the_vnx_stack_on_each():
    """Two stages of 95 LUTs on two one-SLR cards of 100 LUTs: neither card holds both, and over the two cards each
    also needs its VNx stack (10 LUTs): no placement exists. The LP knows it; before an instance over several cards
    paid for their stacks it ran one over the two cards at its full 1,000,000 fps."""
    pipeline = build_pipeline(_table([[(100, 95)], [(100, 95)]]))
    cluster = of_one_type(toy_cluster([[100], [100]], [0, 0]))
    assert exact_optimum(pipeline, cluster, LIMITS, time_limit=30).fps == 0
    assert ColumnBound(pipeline, cluster, LIMITS).bound() == 0


def test_the_split_by_networked_cards_tightens_the_bound():
    """Two stages of 55 LUTs (100 cycles) or 30 LUTs (200 cycles) on four one-SLR cards of 100 LUTs: an instance
    on one card runs at 500,000 fps, one over two cards (a 10-LUT stack each) at 1,000,000 fps, and the best
    placement runs 3,000,000 fps (per pair of cards a fast and a slow instance over both). The LP over all four
    cards says 3,600,000 fps (fast instances over two cards in the pooled 400 LUTs, the cluster's stacks unpaid).
    Split by how many cards a plan networks (each other card holds a one-card plan, the networked ones pay their
    stacks): 3,200,000."""
    pipeline = build_pipeline(_table([[(100, 55), (200, 30)], [(100, 55), (200, 30)]]))
    cluster = of_one_type(toy_cluster([[100]] * 4, [0] * 4))
    assert exact_optimum(pipeline, cluster, LIMITS, time_limit=60).fps == pytest.approx(3e6)
    assert ColumnBound(pipeline, cluster, LIMITS).bound() == pytest.approx(3.6e6, rel=1e-4)
    assert lp_bound(pipeline, cluster, LIMITS) == pytest.approx(3.2e6, rel=1e-4)


def _over_any_count(bound: ColumnBound) -> float:
    """The LP bound without the integer instance counts."""
    with mock.patch.object(colgen, "MAX_COUNTED", 0):
        return bound.bound()


# stages of a slow variant and a LUT- and a DSP-leaning fast one (as benchmarks/exact_bench.py), on one or two
# cards of two or three SLRs: one or two instances fit, so the LP's fractional count matters
lean = st.tuples(st.sampled_from([400, 800]), st.integers(15, 45), st.integers(10, 40), st.sampled_from([8, 16]))
lean_cards = st.lists(st.tuples(st.lists(st.integers(60, 140), min_size=2, max_size=3), st.integers(0, 2)),
                      min_size=1, max_size=2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(lean, min_size=2, max_size=5), cards=lean_cards, sll=st.sampled_from([48, 5000]))
def test_lp_bound_over_integer_counts_is_proven_and_no_looser(stages, cards, sll):
    graph = chain("lean", [[(c, Resources(lut, 0, 0, 0, dsp), w),
                            (c // 2, Resources(2 * lut, 0, 0, 0, dsp // 2), 2 * w),
                            (c // 2, Resources(lut // 2 + 5, 0, 0, 0, 2 * dsp), 2 * w)] for c, lut, dsp, w in stages])
    cluster = toy_cluster([c[0] for c in cards], [min(c[1], len(c[0]) - 1) for c in cards], sll=sll)
    pipeline = build_pipeline(graph)
    found = exact_optimum(pipeline, cluster, LIMITS, time_limit=30).fps  # feasible, if not proven optimal
    bound = ColumnBound(pipeline, cluster, LIMITS).bound()
    assert bound >= found * (1 - 1e-6) - 1e-6
    assert bound <= _over_any_count(ColumnBound(pipeline, cluster, LIMITS)) * (1 + 1e-6) + 1e-6


def test_a_fractional_instance_count_is_not_claimed():
    # one stage of 60 LUT on an SLR of 100: the LP runs 100/60 instances (1,666,667 fps), a plan one (1,000,000):
    # at most one instance is 1,000,000 and two do not fit (the line of the count row's master proves it)
    graph = chain("one", [[(100, Resources(60, 0, 0, 0, 0), 8)]])
    cluster = toy_cluster([[100]], [0])
    pipeline = build_pipeline(graph)
    assert exact_optimum(pipeline, cluster, LIMITS).fps == pytest.approx(1e6)
    assert _over_any_count(ColumnBound(pipeline, cluster, LIMITS)) == pytest.approx(1e6 / 0.6)
    assert ColumnBound(pipeline, cluster, LIMITS).bound() == pytest.approx(1e6)


# benchmarks/exact_bench.py's problem #3 (seed 14): (cycles, LUT, DSP, output width) per option, per stage, on one
# card of three SLRs (105, 117, 148 LUT, Ethernet on SLR 2, 48 SLLs)
BENCH_3 = [[(800, 30, 24, 8), (400, 60, 12, 32), (400, 20, 48, 16)],
           [(400, 23, 32, 16), (200, 46, 16, 32), (200, 16, 64, 32)],
           [(400, 29, 17, 8), (200, 58, 8, 16), (200, 19, 34, 16)],
           [(400, 15, 31, 8), (200, 30, 15, 32), (200, 12, 62, 16)],
           [(1600, 28, 24, 16), (800, 56, 12, 32), (800, 19, 48, 32)],
           [(400, 42, 21, 8), (200, 84, 10, 16), (200, 26, 42, 16)],
           [(800, 41, 13, 8), (400, 82, 6, 16), (400, 25, 26, 16)]]


def test_exact_bench_problem_3_bound_drops_with_integer_counts():
    # the optimum is one instance at 800 cycles (125,000 fps); the LP runs 1.76 instances of that speed (219,620
    # fps), over integer counts 158,860
    graph = chain("bench3", [[(c, Resources(lut, 0, 0, 0, dsp), w) for c, lut, dsp, w in stage] for stage in BENCH_3])
    cluster = toy_cluster([[105, 117, 148]], [2], sll=48)
    pipeline = build_pipeline(graph)
    assert ColumnBound(pipeline, cluster, LIMITS).bound() == pytest.approx(158_860, rel=1e-3)
    assert _over_any_count(ColumnBound(pipeline, cluster, LIMITS)) == pytest.approx(219_620, rel=1e-3)


def test_an_instance_that_needs_more_than_a_card_prices_out():
    # two stages, each fast (100 cycles) in 55 LUT or slow (200 cycles) in 40, on one SLR of 100 LUT: the fast
    # instance (110 LUT) fits no card, one slow one fits (1 x 500,000 fps). Over any instance count, without the
    # per-instance limit the LP runs 100/110 of a fast instance (909,091 fps); with it, 100/80 slow ones
    # (625,000 fps); over integer counts, one slow one (two do not fit)
    graph = chain("two", [[(100, Resources(55, 0, 0, 0, 0), 8), (200, Resources(40, 0, 0, 0, 0), 8)]] * 2)
    cluster = toy_cluster([[100]], [0])
    pipeline = build_pipeline(graph)
    assert exact_optimum(pipeline, cluster, LIMITS).fps == pytest.approx(500_000)
    assert _over_any_count(_without_instance_limits(ColumnBound(pipeline, cluster, LIMITS))) == pytest.approx(1e6 / 1.1)
    assert _over_any_count(ColumnBound(pipeline, cluster, LIMITS)) == pytest.approx(625_000)
    assert ColumnBound(pipeline, cluster, LIMITS).bound() == pytest.approx(500_000)


def test_a_plan_that_reaches_the_lp_bound_says_it_is_optimal():
    # one stage in a LUT or a DSP variant, each half an SLR: the per-resource bound sees no limit (each
    # resource has a variant without it), the LP sees the four instances the plan runs
    graph = chain("half", [[(100, Resources(50, 0, 0, 0, 0), 8), (100, Resources(0, 0, 0, 0, 50), 8)]])
    plan = solve(graph, toy_cluster([[100]], [0]), limits=LIMITS, certify=True)
    assert plan.bound_method == "lp" and plan.optimal
    assert plan.total_fps == pytest.approx(4 * 100e6 / 100) == pytest.approx(plan.bound)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=layers, cards=cards, below=st.floats(1e-6, 0.5))
def test_no_plan_between_is_only_claimed_where_none_beats_the_incumbent(layers, cards, below):
    graph = chain("rand", layers)
    cluster = toy_cluster([c[0] for c in cards], [min(c[1], len(c[0]) - 1) for c in cards])
    pipeline = build_pipeline(graph)
    exact = best_total_fps(pipeline, cluster, LIMITS)
    search = LevelSearch(pipeline, cluster, LIMITS)
    if exact > 0:  # an incumbent below the optimum, under a proven bound: something beats it
        assert search.better_may_exist(exact * (1 - below), max(exact, ColumnBound(pipeline, cluster, LIMITS).bound()))
    assert not search.better_may_exist(exact, exact)  # nothing lies above the optimum and within it


def test_a_zoo_plan_with_no_sum_of_instance_fps_left_below_its_bound_says_it_is_optimal(mobilenet):
    # at a 1,700 fps floor one U280 runs one 1,793 fps instance: two would need 3,400 fps, more than the LP's
    # 2,306, and the per-resource tests rule out every faster level alone
    floored = PackSettings(min_instance_fps=1700)
    plan = solve(mobilenet, load_cluster(CLUSTERS / "1xU280.yaml"), settings=floored, certify=True)
    assert plan.optimal and plan.total_fps < plan.bound
    assert not solve(mobilenet, load_cluster(CLUSTERS / "1xU280.yaml"), certify=True).optimal


@pytest.fixture(scope="module")
def mobilenet():
    return load_model("mobilenetv1")


def test_min_instance_fps_is_respected_and_costs_throughput(mobilenet):
    cluster = load_cluster(CLUSTERS / "1xU280.yaml")
    free = solve(mobilenet, cluster)
    floor = 1.5 * min(i.fps for i in free.instances)  # 1,494 fps: above the free plan's 996, below the fastest 1,793
    floored = solve(mobilenet, cluster, settings=PackSettings(min_instance_fps=floor))
    assert all(i.fps >= floor for i in floored.instances)
    assert floored.min_instance_fps == floor and floored.total_fps <= free.bound
    with pytest.raises(InputError, match="min-instance-fps"):
        solve(mobilenet, cluster, settings=PackSettings(min_instance_fps=1e9))


def test_no_latency_floor_plans_at_least_what_a_floor_plans():
    # the floor keeps the fast levels the unconstrained search thins out (CNV: 14,400 cycles between the
    # candidates 12,544 and 16,200): without it the plan must still find what fits there
    cnv, cluster = load_model("cnv"), load_cluster(CLUSTERS / "1xU280.yaml")
    floored = solve(cnv, cluster, settings=PackSettings(min_instance_fps=8000))
    assert solve(cnv, cluster).total_fps >= floored.total_fps - 1e-6


def test_a_measured_clock_scales_fps_exactly_as_cycles_over_clock(mobilenet):
    slow = solve(mobilenet, load_cluster(CLUSTERS / "2xU280.yaml"))
    catalog = with_clocks(load_catalog(), {"u280": 250}, "measured (build report)")
    fast = solve(mobilenet, load_cluster(CLUSTERS / "2xU280.yaml", catalog))
    assert fast.clocks["u280"].mhz == 250 and fast.clocks["u280"].source == "measured (build report)"
    assert slow.clocks["u280"].source == "modelled default"
    assert [i.cycles_per_frame for i in fast.instances] == [i.cycles_per_frame for i in slow.instances]
    for instance in fast.instances:
        assert instance.fps == pytest.approx(250e6 / instance.cycles_per_frame, abs=0.01)
    assert fast.total_fps == pytest.approx(slow.total_fps * 250 / 200, rel=1e-4)


def test_an_achieved_clock_changes_fps_but_not_the_builds_it_was_measured_on(mobilenet):
    """A build report's clock (Vitis lowers it where timing does not close) is what the cards run at; builds keep
    the clock they target, so a re-plan on the report reuses the very builds that reported it."""
    cluster = CLUSTERS / "2xU280.yaml"
    made = solve(mobilenet, load_cluster(cluster))
    catalog = with_clocks(load_catalog(), {"u280": 180}, "reported by a build", built_at=200)
    reached = solve(mobilenet, load_cluster(cluster, catalog))
    assert reached.total_fps == pytest.approx(made.total_fps * 180 / 200, rel=1e-4)
    assert (reached.clocks["u280"].mhz, reached.clocks["u280"].build_mhz) == (180, 200)
    assert [r.digest for r in plan_builds("zoo:mobilenetv1", reached)] == \
        [r.digest for r in plan_builds("zoo:mobilenetv1", made)]
    assert {r.fclk_mhz for r in plan_builds("zoo:mobilenetv1", reached)} == {200}


def test_clock_input_errors_name_the_field():
    with pytest.raises(InputError, match="clock"):
        with_clocks(load_catalog(), {"u999": 250}, "x")
    with pytest.raises(InputError, match="clock u280"):
        with_clocks(load_catalog(), {"u280": 0}, "x")


def test_catalog_override_of_the_clock_says_so(tmp_path):
    extra = tmp_path / "cards.yaml"
    extra.write_text("cards:\n  u280: {fclk_mhz: 230}\n")
    card = load_catalog(extra).card("u280")
    assert card.fclk_mhz == 230 and card.fclk_source.startswith("catalog override")
