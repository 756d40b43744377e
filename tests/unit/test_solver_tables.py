"""The solver's option tables: Pareto fronts and least resources per cycle budget, against their definitions."""

from __future__ import annotations

import pytest
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_partitioner.cluster import ClusterSpec, NodeSpec, cluster_from_spec
from elasticdf_partitioner.resources import Resources
from elasticdf_partitioner.solver import solve
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


def test_replanning_on_other_cards_of_the_same_types_reuses_the_pattern_search():
    """Patterns are kept on the pipeline by content: a second solve on other nodes gives the same plan."""
    catalog, graph = load_catalog(), load_model("mobilenetv1")

    def cluster(prefix):
        return cluster_from_spec(ClusterSpec(nodes=[NodeSpec(name=f"{prefix}-{i}", cards=["u280", "u250"])
                                                    for i in range(2)]), catalog)

    first = solve(graph, cluster("a"))
    kept = {k: v for k, v in build_pipeline(graph).memo.items() if k[0] == "pattern"}
    second = solve(graph, cluster("b"))
    assert kept and {k: v for k, v in build_pipeline(graph).memo.items() if k[0] == "pattern"} == kept
    assert [(i.fps, [(s.card_type, s.layer_range) for s in i.segments]) for i in first.instances] == \
        [(i.fps, [(s.card_type, s.layer_range) for s in i.segments]) for i in second.instances]
    assert {s.node for i in second.instances for s in i.segments} <= {"b-0", "b-1"}
