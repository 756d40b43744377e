"""The solver on the zoo models and the example clusters: the issue's acceptance questions and the contracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from elasticdf_partitioner.catalog import Limits
from elasticdf_partitioner.cli import main
from elasticdf_partitioner.cluster import ClusterSpec, cluster_from_spec, load_cluster
from elasticdf_partitioner.errors import InfeasibleError, InputError
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.zoo import load_model

CLUSTERS = Path(__file__).parents[2] / "examples" / "clusters"
PLAN_KEYS = {"objective", "model", "fclk_mhz", "instances", "total_fps", "cards_used", "cost_per_hour",
             "fps_per_dollar_hour", "solve_seconds", "bound"}
SEGMENT_KEYS = {"node", "card", "slrs", "layers", "ingress_gbps", "egress_gbps", "resources", "utilisation"}


@pytest.fixture(scope="module")
def mobilenet():
    return load_model("mobilenetv1")


def test_mobilenet_on_2xu280_beats_two_published_instances(mobilenet):
    cluster = load_cluster(CLUSTERS / "2xU280.yaml")
    plan = solve(mobilenet, cluster)
    fclk = min(c.type.fclk_mhz for c in cluster.cards) * 1e6
    assert plan.total_fps >= 2 * fclk / 110889
    assert plan.bound is not None and plan.total_fps <= plan.bound


def test_mobilenet_on_2xu250_packs_more_than_three_published_instances(mobilenet):
    plan = solve(mobilenet, load_cluster(CLUSTERS / "2xU250.yaml"))
    assert plan.total_fps >= 3 * 200e6 / 111561


def test_two_cards_plan_at_least_what_each_card_plans_alone():
    """A second card never lowers what the first one runs: two U280s once planned ResNet-50 at 3,986 fps as one
    group while one U280 alone plans 2,234."""
    resnet = load_model("resnet50")
    one = solve(resnet, load_cluster(CLUSTERS / "1xU280.yaml"))
    two = solve(resnet, load_cluster(CLUSTERS / "2xU280.yaml"))
    assert two.total_fps >= 2 * one.total_fps * (1 - 1e-9)


def test_plan_json_contract(mobilenet):
    plan = json.loads(solve(mobilenet, load_cluster(CLUSTERS / "2xU280.yaml")).model_dump_json())
    assert PLAN_KEYS <= set(plan)
    for instance in plan["instances"]:
        assert {"fps", "fclk_mhz", "latency_ms", "segments"} <= set(instance)
        for segment in instance["segments"]:
            assert SEGMENT_KEYS <= set(segment)
            assert set(segment["resources"]) == {"lut", "ff", "bram18", "uram", "dsp"}


def test_every_slr_stays_within_its_limits(mobilenet):
    cluster = load_cluster(CLUSTERS / "2xU250.yaml")
    limits = Limits()
    plan = solve(mobilenet, cluster, limits=limits)
    for instance in plan.instances:
        for segment in instance.segments:
            assert segment.utilisation["lut"] <= limits.lut + 1e-6


def test_instances_use_each_card_at_most_once_and_cards_exist(mobilenet):
    cluster = load_cluster(CLUSTERS / "2xU280.yaml")
    plan = solve(mobilenet, cluster)
    names = {(c.node, c.index) for c in cluster.cards}
    for instance in plan.instances:
        cards = [(s.node, s.card) for s in instance.segments]
        assert len(cards) == len(set(cards)) and set(cards) <= names
        assert instance.segments[0].layer_range[0] == 0
        assert instance.segments[-1].layer_range[1] == len(mobilenet.layers) - 1


def test_cost_objective_meets_target_with_cheapest_cards(mobilenet):
    cluster = load_cluster(CLUSTERS / "mixed-rack.yaml")
    plan = solve(mobilenet, cluster, objective="cost", target_fps=3000)
    assert plan.total_fps >= 3000
    full = solve(mobilenet, cluster)
    assert plan.cost_per_hour < full.cost_per_hour


def test_latency_objective_uses_two_cards_for_resnet50_on_u280():
    rn50 = load_model("resnet50")
    one = solve(rn50, load_cluster(CLUSTERS / "1xU280.yaml"), objective="latency")
    two = solve(rn50, load_cluster(CLUSTERS / "2xU280.yaml"), objective="latency")
    assert min(i.latency_ms for i in two.instances) < one.instances[0].latency_ms


def test_infeasible_says_what_is_short():
    rn50 = load_model("resnet50")
    tiny = cluster_from_spec(ClusterSpec(nodes=[{"name": "n0", "cards": ["u50"]}]))
    with pytest.raises(InfeasibleError) as err:
        solve(rn50, tiny, limits=Limits(lut=0.1))
    assert "short by" in str(err.value) and "lut" in str(err.value)


def test_cost_target_out_of_reach_says_by_how_much(mobilenet):
    with pytest.raises(InfeasibleError, match="short by"):
        solve(mobilenet, load_cluster(CLUSTERS / "1xU250.yaml"), objective="cost", target_fps=1e6)


def test_bad_objective_names_allowed_values(mobilenet):
    with pytest.raises(InputError, match="throughput"):
        solve(mobilenet, load_cluster(CLUSTERS / "1xU250.yaml"), objective="speed")


def test_cli_plan_writes_json_finn_files_and_picture(tmp_path, capsys):
    out = tmp_path / "p.json"
    code = main(["plan", "--model", "mobilenetv1", "--cluster", str(CLUSTERS / "2xU280.yaml"), "--json", str(out),
                 "--finn-out", str(tmp_path / "finn"), "--picture", str(tmp_path / "plan.png")])
    assert code == 0
    plan = json.loads(out.read_text())
    assert PLAN_KEYS <= set(plan)
    assert "total" in capsys.readouterr().out
    folding = json.loads((tmp_path / "finn" / "folding_config.json").read_text())
    assert "Defaults" in folding and any("PE" in v for v in folding.values() if isinstance(v, dict))
    floorplans = list((tmp_path / "finn").glob("instance*/floorplan_*.json"))
    assert floorplans
    entry = next(v for k, v in json.loads(floorplans[0].read_text()).items() if k != "Defaults")
    assert set(entry) == {"slr", "partition_id", "device_id", "mem_port"}
    assert (tmp_path / "plan.png").stat().st_size > 1000


def test_cli_plan_infeasible_exits_2(tmp_path, capsys):
    cluster = tmp_path / "c.yaml"
    cluster.write_text("nodes:\n  - {name: n0, cards: [u50]}\n")
    code = main(["plan", "--model", "resnet50", "--cluster", str(cluster), "--limits", '{"lut": 0.1}'])
    assert code == 2
    err = capsys.readouterr().err
    assert "short by" in err and "Traceback" not in err


def test_cli_plan_unknown_card_names_field(tmp_path, capsys):
    cluster = tmp_path / "c.yaml"
    cluster.write_text("nodes:\n  - {name: n0, cards: [u999]}\n")
    assert main(["plan", "--model", "cnv", "--cluster", str(cluster)]) == 2
    err = capsys.readouterr().err
    assert "nodes[0].cards[0]" in err and "u280" in err
