"""The fast mode (solver/pack.py: one balanced option choice per level) against the exact MILP (solver/exact.py)
on pipelines past the exhaustive mode's 8 stages: never infeasible where a plan exists, never above the optimum.
The two regression problems are #11 and #10 of benchmarks/exact_bench.py (seed 14)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from elasticdf_partitioner.catalog import Limits
from elasticdf_partitioner.cluster import LINK_GBPS, ClusterSpec, cluster_from_spec, load_cluster
from elasticdf_partitioner.errors import InfeasibleError
from elasticdf_partitioner.models.synthetic import chain, toy_cluster
from elasticdf_partitioner.resources import Resources
from elasticdf_partitioner.solver import candidate_levels, solve
from elasticdf_partitioner.solver.bound import fps_per_resource
from elasticdf_partitioner.solver.exact import exact_optimum
from elasticdf_partitioner.solver.pack import GroupPacker, GroupResult, PackSettings
from elasticdf_partitioner.solver.placers import RunPlacer, _balanced_run, _Switches, balanced_order
from elasticdf_partitioner.solver.replicate import EXHAUSTIVE_STAGES
from elasticdf_partitioner.solver.stages import StageOption, build_pipeline
from elasticdf_partitioner.solver.state import AVG_KINDS
from elasticdf_partitioner.zoo import load_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_solver_exactness import LIMITS

# (cycles, LUT, DSP, output width) per option, per stage
BENCH_11 = [[(800, 22, 18, 16), (400, 44, 9, 16), (400, 16, 36, 16)],
            [(400, 36, 22, 16), (200, 72, 11, 32), (200, 23, 44, 16)],
            [(400, 40, 28, 16), (200, 80, 14, 32), (200, 25, 56, 32)],
            [(800, 39, 27, 16), (400, 78, 13, 16), (400, 24, 54, 16)],
            [(800, 16, 27, 8), (400, 32, 13, 16), (400, 13, 54, 16)],
            [(400, 25, 12, 8), (200, 50, 6, 32), (200, 17, 24, 32)],
            [(800, 38, 22, 8), (400, 76, 11, 32), (400, 24, 44, 32)],
            [(400, 18, 14, 16), (200, 36, 7, 32), (200, 14, 28, 16)],
            [(800, 18, 37, 16), (400, 36, 18, 16), (400, 14, 74, 32)],
            [(1600, 31, 38, 16), (800, 62, 19, 32), (800, 20, 76, 32)]]
BENCH_10 = [[(400, 21, 19, 8), (200, 42, 9, 16), (200, 15, 38, 32)],
            [(800, 17, 26, 8), (400, 34, 13, 16), (400, 13, 52, 16)],
            [(1600, 17, 27, 8), (800, 34, 13, 16), (800, 13, 54, 32)],
            [(400, 43, 11, 16), (200, 86, 5, 32), (200, 26, 22, 32)],
            [(1600, 28, 36, 8), (800, 56, 18, 32), (800, 19, 72, 16)],
            [(400, 15, 40, 8), (200, 30, 20, 32), (200, 12, 80, 16)],
            [(1600, 34, 10, 8), (800, 68, 5, 16), (800, 22, 20, 32)],
            [(800, 15, 11, 8), (400, 30, 5, 32), (400, 12, 22, 32)],
            [(400, 22, 19, 16), (200, 44, 9, 32), (200, 16, 38, 32)]]

# #1 and #4: two 3-SLR cards; the optima (500,000 fps, the MILP's in benchmarks/results/exact.md) have two
# instances at 400 cycles that both span the two cards (#1), and four at 800 (#4)
BENCH_1 = [[(800, 43, 29, 8), (400, 86, 14, 16), (400, 26, 58, 32)],
           [(400, 42, 13, 16), (200, 84, 6, 16), (200, 26, 26, 32)],
           [(800, 34, 16, 16), (400, 68, 8, 32), (400, 22, 32, 32)],
           [(400, 18, 36, 8), (200, 36, 18, 32), (200, 14, 72, 32)],
           [(400, 15, 15, 16), (200, 30, 7, 16), (200, 12, 30, 16)],
           [(800, 30, 31, 8), (400, 60, 15, 32), (400, 20, 62, 32)],
           [(800, 30, 24, 16), (400, 60, 12, 32), (400, 20, 48, 16)],
           [(800, 30, 22, 8), (400, 60, 11, 32), (400, 20, 44, 32)],
           [(400, 33, 14, 16), (200, 66, 7, 32), (200, 21, 28, 32)],
           [(400, 41, 32, 16), (200, 82, 16, 32), (200, 25, 64, 16)]]
BENCH_4 = [[(800, 29, 35, 16), (400, 58, 17, 16), (400, 19, 70, 32)],
           [(400, 23, 17, 16), (200, 46, 8, 16), (200, 16, 34, 16)],
           [(1600, 15, 39, 16), (800, 30, 19, 16), (800, 12, 78, 16)],
           [(800, 27, 24, 16), (400, 54, 12, 32), (400, 18, 48, 32)],
           [(400, 23, 14, 16), (200, 46, 7, 32), (200, 16, 28, 16)],
           [(1600, 33, 36, 16), (800, 66, 18, 16), (800, 21, 72, 16)]]


def _graph(tables):
    return chain("fast", [[(c, Resources(lut, 0, 0, 0, dsp), w) for c, lut, dsp, w in t] for t in tables])


def _plan_fps(graph, cluster) -> float:
    try:
        return solve(graph, cluster, limits=LIMITS).total_fps
    except InfeasibleError:
        return 0.0


def _optimum(graph, cluster) -> float:
    exact = exact_optimum(build_pipeline(graph), cluster, LIMITS, time_limit=120)
    assert exact.optimal
    return exact.fps


def test_fast_mode_finds_the_only_plan_of_bench_problem_11():
    """One instance fits the 2-SLR card only with different variants on the two SLRs; one option choice per
    stage fits the card's totals but splits nowhere, so the fast mode alone called it infeasible."""
    graph, cluster = _graph(BENCH_11), toy_cluster([[194, 177]], [1], sll=48)
    assert len(BENCH_11) > EXHAUSTIVE_STAGES  # the fast mode is what plans it
    assert _plan_fps(graph, cluster) == pytest.approx(_optimum(graph, cluster)) == pytest.approx(125_000)


@pytest.mark.slow
def test_fast_mode_reaches_the_optimum_of_bench_problem_10():
    graph, cluster = _graph(BENCH_10), toy_cluster([[186, 195, 200]], [0], sll=48)
    assert _plan_fps(graph, cluster) == pytest.approx(_optimum(graph, cluster)) == pytest.approx(250_000)


def test_fast_mode_leaves_room_for_the_vnx_stack_on_the_card_it_leaves():
    """A card is left from its Ethernet SLR, where the VNx stack goes: the run there must leave room for it
    (the greedy placer used to measure the run first and open the stack on an overdrawn SLR). 90 LUT of
    stages, 80 LUT on the two cards once both stacks are on: nothing fits."""
    graph = chain("eth", [[(50, Resources(30, 0, 0, 0, 0), 8)]] * 3)
    cluster = toy_cluster([[40], [60]], [0, 0], sll=40)
    pipeline = build_pipeline(graph)
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, LIMITS, fps_per_resource(pipeline, 100),
                         PackSettings())
    assert packer.solve(pipeline.levels()).fps == 0


@pytest.mark.parametrize("tables, cards, eth, sll", [
    (BENCH_1, [[160, 133, 145], [167, 124, 105]], [2, 2], 5000),
    (BENCH_4, [[173, 149, 176], [132, 187, 197]], [1, 0], 48)], ids=["bench-1", "bench-4"])
def test_solver_reaches_the_optimum_of_bench_problems_1_and_4(tables, cards, eth, sll):
    """Two 3-SLR cards. #1 needs instances that each use their own variants on SLRs they share (one after
    the other, the first fills the first SLRs and the second does not fit what is left); #4's fast-mode plan
    is optimal, and the exhaustive search that follows on 6 stages must keep it."""
    assert _plan_fps(_graph(tables), toy_cluster(cards, eth, sll=sll)) == pytest.approx(500_000)


option = st.tuples(st.integers(15, 45), st.integers(10, 40), st.sampled_from([8, 16, 32]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(st.tuples(st.sampled_from([400, 800]), option), min_size=EXHAUSTIVE_STAGES + 1,
                       max_size=EXHAUSTIVE_STAGES + 2),
       slrs=st.lists(st.integers(100, 200), min_size=2, max_size=2), eth=st.integers(0, 1))
def test_fast_mode_is_feasible_wherever_the_exact_model_is(stages, slrs, eth):
    """The benchmark generator's shape (a slow variant, an LUT- and a DSP-leaning fast one; tight SLL) on
    one 2-SLR card, where one or two instances fit: the plan is never above the optimum, and never empty where
    the optimum is not."""
    graph = chain("fast", [[(c, Resources(lut, 0, 0, 0, dsp), w), (c // 2, Resources(2 * lut, 0, 0, 0, dsp // 2), 16),
                            (c // 2, Resources(lut // 2 + 5, 0, 0, 0, 2 * dsp), 32)] for c, (lut, dsp, w) in stages])
    cluster = toy_cluster([slrs], [eth], sll=48)
    optimum, fps = _optimum(graph, cluster), _plan_fps(graph, cluster)
    assert fps <= optimum * (1 + 1e-6)
    assert (fps > 0) == (optimum > 0)


def _run_walks_on_two_cards(stages, slrs, held):
    """Per feasible level and route of a random chain on two cards: the pipeline, the placing state and the
    RunPlacer walks' inputs; the first `held` routes a walk places on keep their instance (suspended walks), so
    that the SLRs are unevenly full for the walks after them."""
    graph = chain("walks", [[(c, Resources(lut, 0, 0, 0, dsp), w), (c // 2, Resources(2 * lut, 0, 0, 0, dsp // 2), 16),
                             (c // 2, Resources(lut // 2 + 5, 0, 0, 0, 2 * dsp), 32)] for c, (lut, dsp, w) in stages])
    cluster = toy_cluster([slrs, slrs[::-1]], [0, len(slrs) - 1], sll=48)
    pipeline = build_pipeline(graph)
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, LIMITS, fps_per_resource(pipeline, 100),
                         PackSettings())
    state = packer._placing_state()
    holding = []  # walks suspended at their placement: the state keeps what they hold
    for level in (lv for lv in pipeline.levels() if RunPlacer(pipeline, state, lv).feasible_level()):
        for route in packer.routes:
            yield pipeline, state, level, route
            if len(holding) < held:
                walk = RunPlacer(pipeline, state, level).place(route)
                placed = next(walk, None)
                if placed is not None:
                    holding.append((walk, placed))


_WALKS = dict(stages=st.lists(st.tuples(st.sampled_from([400, 800]), option), min_size=3, max_size=8),
              slrs=st.lists(st.integers(40, 160), min_size=1, max_size=3), held=st.integers(0, 2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_WALKS)
def test_run_placer_skips_no_route_it_could_place_on(stages, slrs, held):
    """RunPlacer only walks routes whose SLRs, in order, reach the last stage at each stage's least resources
    (_route_can_hold): every route a walk without that check places an instance on passes it."""
    for pipeline, state, level, route in _run_walks_on_two_cards(stages, slrs, held):
        with mock.patch.object(RunPlacer, "_route_can_hold", return_value=True):
            placed = list(RunPlacer(pipeline, state, level).place(route))  # each walk runs on to its undo
        assert not placed or RunPlacer(pipeline, state, level)._route_can_hold(route)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_WALKS)
def test_a_run_placer_gives_up_only_walks_that_would_place_nothing(stages, slrs, held):
    """RunPlacer walks stop where the SLRs after the current one cannot reach the last stage at the least each stage
    uses (_reach, in _route_can_hold and _farthest): every walk places what it places without those checks."""
    for pipeline, state, level, route in _run_walks_on_two_cards(stages, slrs, held):
        placed = [p.key() for p in RunPlacer(pipeline, state, level).place(route)]
        with mock.patch.object(RunPlacer, "_reach", lambda placer, slots, start: len(placer.choice)):
            unchecked = [p.key() for p in RunPlacer(pipeline, state, level).place(route)]
        assert placed == unchecked


def _per_slr_feasible(pipeline, cluster, placement) -> bool:
    """Recomputed from the placement's pieces alone: each SLR's options within its usable resources and mean
    budget, each SLR boundary's streams (from the options on its sending side) within its SLLs."""
    ip, limits = cluster.catalog.ip_costs, Limits()
    option = {p.first + i: o for p in placement.pieces for i, o in enumerate(p.options)}
    for piece in placement.pieces:
        card = cluster.cards[piece.card].type
        used = sum((o.res for o in piece.options), Resources())
        guide = Resources.from_list(card.slrs[piece.slr]) - card.shell_overhead(piece.slr, ip)
        kinds = [k for k in AVG_KINDS if guide[k] > 0]
        if any(u > c + 1e-6 for u, c in zip(used, card.usable(piece.slr, ip, limits, with_eth=False))) or \
                sum(used[k] / guide[k] for k in kinds) > limits.memory_dsp_mean * len(kinds) + 1e-6:
            return False
    for sender, receiver in zip(placement.pieces, placement.pieces[1:]):
        width = sum(option[e.src].out_widths[e.src_pos] for e in pipeline.crossing(receiver.first))
        if sender.card == receiver.card and width > cluster.cards[sender.card].type.sll_per_pair:
            return False
    return True


def test_fast_mode_spans_the_slrs_of_a_u280_with_options_chosen_per_slr():
    """ResNet-50's fastest instance on one U280 SLR runs 498 fps, so one option choice per level planned three
    of them (1,495 fps); with options balanced per SLR one instance spans all three SLRs at 1,993 fps (the
    fastest level a MILP fits, between the candidate levels 2,278 and 1,736), or one at 1,736 fps and one at
    498 in what it leaves, both over the three SLRs (the plan), and stays feasible SLR by SLR."""
    cluster = load_cluster(Path(__file__).parents[2] / "examples" / "clusters" / "1xU280.yaml")
    graph = load_model("resnet50")
    assert solve(graph, cluster).total_fps > 1.3 * 3 * 498
    pipeline = build_pipeline(graph)
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, Limits(), fps_per_resource(pipeline, 200),
                         PackSettings())
    result = packer.solve(candidate_levels(pipeline))
    assert result.fps > 1.3 * 3 * 498
    assert all(_per_slr_feasible(pipeline, cluster, p) for p in result.placements)
    assert {len(p.pieces) for p in result.placements} == {3}


def _group_feasible(pipeline, cluster, placements, limits: Limits | None = None) -> bool:
    """All placements of a group together, recomputed from their pieces: each SLR's options, and the VNx stack
    on the Ethernet SLR of a card a stream leaves or enters, within its usable resources and mean budget; each
    SLR boundary's streams (from the options on their sending side) within its SLLs per direction; each card's
    streams to and from other cards within its ports."""
    ip, limits = cluster.catalog.ip_costs, limits or Limits()
    used: dict[tuple[int, int], Resources] = {}
    streams: dict[tuple[int, int, int], float] = {}
    ports: dict[tuple[int, str], float] = {}
    for placement in placements:
        option = {p.first + i: o for p in placement.pieces for i, o in enumerate(p.options)}
        for piece in placement.pieces:
            run = sum((o.res for o in piece.options), Resources())
            used[piece.card, piece.slr] = used.get((piece.card, piece.slr), Resources()) + run
        for sender, receiver in zip(placement.pieces, placement.pieces[1:]):
            if sender.card == receiver.card:
                width = sum(option[e.src].out_widths[e.src_pos] for e in pipeline.crossing(receiver.first))
                boundary = (sender.card, sender.slr, receiver.slr)
                streams[boundary] = streams.get(boundary, 0.0) + width
        for src, dst, _, gbps in placement.card_cuts:
            ports[src, "out"] = ports.get((src, "out"), 0.0) + gbps
            ports[dst, "in"] = ports.get((dst, "in"), 0.0) + gbps
    vnx = Resources.from_list(ip.eth).scale(limits.as_resources())
    for index in {c for c, _ in ports}:
        eth = cluster.cards[index].type.eth_slr
        used[index, eth] = used.get((index, eth), Resources()) + vnx
    for (index, slr), res in used.items():
        card = cluster.cards[index].type
        guide = Resources.from_list(card.slrs[slr]) - card.shell_overhead(slr, ip)
        kinds = [k for k in AVG_KINDS if guide[k] > 0]
        if any(u > c + 1e-6 for u, c in zip(res, card.usable(slr, ip, limits, with_eth=False))) or \
                sum(res[k] / guide[k] for k in kinds) > limits.memory_dsp_mean * len(kinds) + 1e-6:
            return False
    if any(gbps > LINK_GBPS * cluster.cards[c].type.qsfp_ports + 1e-6 for (c, _), gbps in ports.items()):
        return False
    return all(abs(a - b) == 1 and width <= cluster.cards[index].type.sll_per_pair + 1e-6
               for (index, a, b), width in streams.items())


@pytest.mark.parametrize("model, card, before", [("resnet50", "1xU250", 2_234), ("mobilenetv1", "1xU280", 2_396)])
def test_fast_mode_fills_what_fast_instances_leave_with_slower_ones_placed_per_slr(model, card, before):
    """A fast instance over several SLRs leaves parts of them that one option choice per level fills with
    nothing: ResNet-50 on a U250 ran 1,736 + 498 fps, MobileNetV1 on a U280 3 x 799 (the plans before the
    per-SLR fill). Slower instances with options balanced per SLR fill what the fast ones leave (1,736 + 996,
    1,793 + 929 fps), and the whole card stays feasible SLR by SLR and boundary by boundary."""
    cluster = load_cluster(Path(__file__).parents[2] / "examples" / "clusters" / f"{card}.yaml")
    pipeline = build_pipeline(load_model(model))
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, Limits(), fps_per_resource(pipeline, 200),
                         PackSettings())
    result = packer.solve(candidate_levels(pipeline))
    assert result.fps > 1.08 * before
    assert len({p.cycles for p in result.placements}) > 1
    assert all(_per_slr_feasible(pipeline, cluster, p) for p in result.placements)
    assert _group_feasible(pipeline, cluster, result.placements)


def test_fast_mode_fills_what_an_instance_over_two_cards_leaves():
    """ResNet-50's 3,986 fps instance needs more than one U280 (1.2 cards of LUTs at the least) and leaves one
    SLR of the two and scraps: a filler of 651 fps takes them (6 times slower than the instance, 3 times per
    card it needs). Each card alone plans 1,772 + 498 fps, so the pair plans 4,866 instead of 4,540, and the
    two cards stay feasible SLR by SLR, boundary by boundary and port by port."""
    cluster = load_cluster(Path(__file__).parents[2] / "examples" / "clusters" / "2xU280.yaml")
    graph = load_model("resnet50")
    pipeline = build_pipeline(graph)
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, Limits(), fps_per_resource(pipeline, 200),
                         PackSettings())
    result = packer.solve(candidate_levels(pipeline), floor=2 * 2_269.8)
    assert result.fps > 1.03 * 2 * 2_269.8
    assert max(len({piece.card for piece in p.pieces}) for p in result.placements) == 2
    assert all(_per_slr_feasible(pipeline, cluster, p) for p in result.placements)
    assert _group_feasible(pipeline, cluster, result.placements)
    assert solve(graph, cluster).total_fps == pytest.approx(result.fps)


def test_fast_mode_runs_two_instances_through_the_slrs_of_a_u250_in_opposite_directions():
    """MobileNetV1 on a U250 planned 4 x 799 fps (3,195), one instance per SLR; two instances each over all
    four SLRs, one down SLR 3->0 and one up 0->3, hold the start of one and the end of the other on every SLR
    (the exact level search fits 3,553 fps so). The fast mode finds such a pair (3,542 fps), and the card
    stays feasible SLR by SLR and boundary by boundary in each direction."""
    cluster = load_cluster(Path(__file__).parents[2] / "examples" / "clusters" / "1xU250.yaml")
    graph = load_model("mobilenetv1")
    pipeline = build_pipeline(graph)
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, Limits(), fps_per_resource(pipeline, 200),
                         PackSettings())
    result = packer.solve(candidate_levels(pipeline))
    assert result.fps > 1.1 * 3_195
    assert [len(p.pieces) for p in result.placements] == [4, 4]
    assert {tuple(piece.slr for piece in p.pieces) for p in result.placements} == {(0, 1, 2, 3), (3, 2, 1, 0)}
    assert all(_per_slr_feasible(pipeline, cluster, p) for p in result.placements)
    assert _group_feasible(pipeline, cluster, result.placements)
    assert solve(graph, cluster).total_fps > 1.1 * 3_195


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(option, min_size=4, max_size=10), slrs=st.lists(st.integers(60, 200), min_size=2, max_size=4),
       sll=st.sampled_from([24, 48, 5000]))
def test_opposite_direction_pairs_are_feasible(stages, slrs, sll):
    """Two instances running one card's SLRs in opposite directions, on random chains (a slow variant, an LUT-
    and a DSP-leaning fast one) and cards of 2-4 SLRs: whatever the pair found, the card holds both, SLR by
    SLR and boundary by boundary in each direction."""
    graph = chain("pair", [[(400, Resources(lut, 0, 0, 0, dsp), w), (200, Resources(2 * lut, 0, 0, 0, dsp // 2), 16),
                            (200, Resources(lut // 2 + 5, 0, 0, 0, 2 * dsp), 32)] for lut, dsp, w in stages])
    cluster = toy_cluster([slrs], [0], sll=sll)
    pipeline = build_pipeline(graph)
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, LIMITS, fps_per_resource(pipeline, 100),
                         PackSettings())
    pair = packer._opposite_pair(pipeline.levels(), GroupResult([], 0.0, False, 0), 0.0)
    assert len(pair.placements) in (0, 2)
    assert _group_feasible(pipeline, cluster, pair.placements, LIMITS)


# (LUT, URAM, DSP) per option, per stage; the capacity is 100 of each. One option each of an LUT-, a DSP- and an
# URAM-leaning kind: the search with the total utilisation as its tie-break stopped at LUTs and DSPs both over 100
# (a random search over such stages found it).
TIED = [[(6, 0, 19), (19, 0, 0)], [(18, 34, 0), (18, 0, 2), (9, 0, 18)], [(9, 0, 0), (4, 0, 9), (8, 16, 0)],
        [(11, 0, 29), (29, 0, 3)], [(14, 0, 30), (30, 0, 3)], [(7, 0, 23), (23, 22, 0), (23, 0, 3)],
        [(7, 0, 24), (24, 0, 0)], [(1, 0, 12), (9, 19, 0), (12, 0, 1)]]


def test_balanced_options_fit_where_two_resources_tie_at_the_worst():
    """No single switch lowers the worst of two resources tied at it; relieving the one nearest it first (LUTs
    for URAM) lets the next switch lower the other, so the balanced choice fits the capacity."""
    opts = [[StageOption(100, Resources(lut, 0, 0, uram, dsp), (8,), ()) for lut, uram, dsp in stage] for stage in TIED]
    capacity = Resources(100, 0, 0, 100, 100)
    chosen = [options[0] for options in balanced_order(opts, capacity)]
    assert all(used <= cap for used, cap in zip(sum((o.res for o in chosen), Resources()), capacity))


_OPTION = st.tuples(st.integers(1, 40), st.integers(0, 40), st.integers(0, 40))  # LUT, URAM, DSP


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(_OPTION, min_size=1, max_size=4), min_size=2, max_size=10),
       st.tuples(st.integers(20, 200), st.integers(0, 200), st.integers(1, 200)), st.data())
def test_a_runs_balanced_options_are_those_balanced_order_ranks_first(stages, capacity, data):
    """A walk's runs take their options from the search alone (_balanced_run, which skips ranking the rest):
    for any run of stages they are balanced_order's first options, and their total is theirs; and where they
    fit the capacity no single switch lowers the search's score (the worst utilisation, then the total)."""
    graph = chain("runs", [[(100, Resources(lut, 0, 0, uram, dsp), 8) for lut, uram, dsp in stage]
                           for stage in stages])
    pipeline = build_pipeline(graph)
    opts = pipeline.fronts(100)
    first = data.draw(st.integers(0, len(opts) - 1))
    end = data.draw(st.integers(first + 1, len(opts)))
    lut, uram, dsp = capacity
    room = Resources(lut, 0, 0, uram, dsp)
    run, total = _balanced_run(pipeline, opts, room, (first, end))
    assert run == [options[0] for options in balanced_order(opts[first:end], room)]
    assert total == sum((o.res for o in run), Resources())

    def shares(choice):  # as the search weighs them: a resource the capacity lacks counts against 1e-9
        used = sum((o.res for o in choice), Resources())
        return [u / (c if c > 0 else 1e-9) for u, c in zip(used, room)]

    if max(shares(run)) <= 1:
        score = max(shares(run)) + 1e-6 * sum(shares(run))
        for s, options in enumerate(opts[first:end]):
            for option in options:
                switched = shares(run[:s] + [option] + run[s + 1:])
                assert max(switched) + 1e-6 * sum(switched) >= score - 1e-9


def test_options_balanced_per_slr_relieve_resources_tied_at_the_worst():
    """ResNet-50 on one U200 ran 1,772 fps over its three SLRs: each SLR's options were balanced until LUTs and
    DSPs both stood just over the SLR. Relieving the one near the worst first, one instance runs 1,993 fps over
    the three SLRs (the optimum the exact level search proves there), feasible SLR by SLR."""
    cluster = load_cluster(Path(__file__).parents[2] / "examples" / "clusters" / "1xU200.yaml")
    pipeline = build_pipeline(load_model("resnet50"))
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, Limits(), fps_per_resource(pipeline, 200),
                         PackSettings())
    result = packer.solve(candidate_levels(pipeline))
    assert result.fps > 1.1 * 1_772
    assert all(_per_slr_feasible(pipeline, cluster, p) for p in result.placements)
    assert _group_feasible(pipeline, cluster, result.placements)


@pytest.mark.parametrize(("card", "least"), [("u250", 2_878), ("u55c", 2_269)])
def test_a_run_dive_moves_its_main_instance_between_the_candidate_levels(card, least):
    """A faster main instance with a slower filler. ResNet-50 on a U250: the candidate levels place 1,736 + 997 fps
    (115,200 + 200,704 cycles); at 100,352 cycles, between the candidates, the main instance leaves room for a
    filler at 225,792: 1,993 + 886 = 2,879 fps, the best placement the exact level search found there
    (benchmarks/results/exact.md). On a U55C: 1,772 + 498 at 112,896 cycles, where the candidate places 1,736 +
    498 and the exact level search placed 2,260 in 400 s."""
    cluster = cluster_from_spec(ClusterSpec(nodes=[{"name": "alveo-0", "cards": [card]}]))
    graph = load_model("resnet50")
    plan = solve(graph, cluster)
    assert plan.total_fps >= least
    assert len({i.cycles_per_frame for i in plan.instances}) == 2


def test_a_run_of_stages_equal_to_one_searched_before_takes_that_search():
    """Stages of equal layers share their option lists (ResNet-50 repeats its bottlenecks), so a run of them
    balanced for a capacity of the same proportions is not searched again; its options are those balanced_order
    ranks first for it."""
    pipeline = build_pipeline(load_model("resnet50"))
    opts = pipeline.fronts(401_408)
    ids = [id(options) for options in opts]
    first, again = next((a, b) for a in range(len(ids)) for b in range(a + 6, len(ids) - 6)
                        if ids[a:a + 6] == ids[b:b + 6])
    room = Resources(400_000, 800_000, 1_000, 300, 3_000)
    _balanced_run(pipeline, opts, room, (first, first + 6))
    with mock.patch.object(_Switches, "balanced", side_effect=AssertionError("searched again")):
        run, total = _balanced_run(pipeline, opts, room.scale(2.0), (again, again + 6))  # same proportions
    assert run == [options[0] for options in balanced_order(opts[again:again + 6], room)]
    assert total == sum((o.res for o in run), Resources())


def test_a_run_placers_longest_run_follows_what_its_slr_has_left():
    """_longest_run is kept per SLR and start while nothing was taken from the SLR: after a take it shrinks, after
    the undo it is what it was."""
    graph = chain("longest", [[(100, Resources(15, 0, 0, 0, 10), 8)]] * 6)
    cluster = toy_cluster([[100]], [0])
    pipeline = build_pipeline(graph)
    packer = GroupPacker(pipeline, cluster.cards, cluster.catalog, LIMITS, fps_per_resource(pipeline, 100),
                         PackSettings())
    state = packer._placing_state()
    placer = RunPlacer(pipeline, state, 100)
    before = placer._longest_run(0, 0, 0)
    mark = state.mark()
    state.take(0, 0, Resources(30, 30, 0, 0, 30))
    assert placer._longest_run(0, 0, 0) < before
    state.undo(mark)
    assert placer._longest_run(0, 0, 0) == before
