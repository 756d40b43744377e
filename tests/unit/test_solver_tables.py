"""The solver's option tables: Pareto fronts and least resources per cycle budget, against their definitions."""

from __future__ import annotations

import pytest
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_partitioner.cluster import ClusterSpec, NodeSpec, cluster_from_spec
from elasticdf_partitioner.resources import Resources
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.solver.pack import GroupPacker
from elasticdf_partitioner.solver.stages import StageOption, build_pipeline, pareto
from elasticdf_partitioner.zoo import load_model
from hypothesis import given, settings
from hypothesis import strategies as st


def front_by_definition(options: list[StageOption], max_cycles: int) -> list[StageOption]:
    """Sequential definition: in (res, out_widths, cycles) order, keep an option unless a kept one beats or
    equals it in every resource and stream width."""
    candidates = sorted((o for o in options if o.cycles <= max_cycles), key=lambda o: (o.res, o.out_widths, o.cycles))
    front: list[StageOption] = []
    for option in candidates:
        vector = (*option.res, *option.out_widths)
        if not any(all(a <= b for a, b in zip((*f.res, *f.out_widths), vector)) for f in front):
            front.append(option)
    return front


small = st.integers(0, 4)
option = st.builds(lambda c, r, w: StageOption(c, Resources(*r), (w,), ()), st.integers(1, 6),
                   st.tuples(small, small, small, small, small), small)


@settings(max_examples=300, deadline=None)
@given(st.lists(option, max_size=25), st.integers(0, 7))
def test_pareto_front_equals_the_sequential_definition(options, budget):
    options = sorted(options, key=lambda o: (o.cycles, o.res))  # as stages hold them
    assert pareto(options, budget) == front_by_definition(options, budget)


@pytest.mark.parametrize("model", ["cnv", "mobilenetv1"])
def test_pipeline_tables_equal_their_definitions_at_every_level(model):
    pipeline = build_pipeline(load_model(model))
    levels = pipeline.levels()
    for level in levels[::7] + [levels[0] - 1, levels[-1]]:
        fronts = [front_by_definition(s.options, level) for s in pipeline.stages]
        assert [pipeline.pareto(s, level) for s in range(len(pipeline.stages))] == fronts
        least = None if not all(fronts) else Resources(
            *(sum(min(o.res[k] for o in front) for front in fronts) for k in range(5)))
        assert pipeline.least_resources(level) == least


def two_nodes(prefix: str):
    return cluster_from_spec(ClusterSpec(nodes=[NodeSpec(name=f"{prefix}-{i}", cards=["u280", "u250"])
                                                for i in range(2)]), load_catalog())


def summary(plan) -> list:
    return [(i.fps, [(s.card_type, s.layer_range, s.slrs, s.folding) for s in i.segments]) for i in plan.instances]


def test_pattern_searches_are_kept_by_content_in_memory_and_in_the_plan_cache(tmp_path, monkeypatch):
    """A second solve on other nodes, and a solve in a 'new process' (a fresh graph: the pipeline and the
    pattern searches read back from the plan cache), give the same plan without searching again."""
    monkeypatch.setenv("ELASTICDF_PLAN_CACHE", str(tmp_path))
    first = solve(load_model("mobilenetv1"), two_nodes("a"))
    assert list(tmp_path.glob("pipelines/*.searches-*.pickle")), "the searches are kept next to the pipeline"

    def no_search(*_args, **_kw):
        raise AssertionError("a kept pattern was searched again")

    monkeypatch.setattr(GroupPacker, "solve", no_search)
    second = solve(load_model("mobilenetv1"), two_nodes("b"))
    assert summary(second) == summary(first)
    assert {s.node for i in second.instances for s in i.segments} <= {"b-0", "b-1"}


def test_a_small_clusters_search_is_kept_too(tmp_path, monkeypatch):
    """One or two cards are searched as one group; that search is kept like a pattern's, so the next process
    re-plans the same card types on other nodes without searching again."""
    monkeypatch.setenv("ELASTICDF_PLAN_CACHE", str(tmp_path))

    def one_node(name: str):
        return cluster_from_spec(ClusterSpec(nodes=[NodeSpec(name=name, cards=["u280", "u250"])]), load_catalog())

    first = solve(load_model("mobilenetv1"), one_node("a"))

    def no_search(*_args, **_kw):
        raise AssertionError("a kept search was searched again")

    monkeypatch.setattr(GroupPacker, "solve", no_search)
    second = solve(load_model("mobilenetv1"), one_node("b"))
    assert summary(second) == summary(first) and second.optimal == first.optimal
    assert {s.node for i in second.instances for s in i.segments} == {"b"}
