"""Network limits: cuts between cards pay the VNx stack, 100 Gb/s per port, and leaf uplinks."""

from __future__ import annotations

import dataclasses

import pytest
from elasticdf_partitioner.catalog import Limits
from elasticdf_partitioner.cluster import SwitchSpec
from elasticdf_partitioner.errors import InfeasibleError
from elasticdf_partitioner.models.synthetic import chain, toy_cluster
from elasticdf_partitioner.resources import Resources
from elasticdf_partitioner.solver import solve

LIMITS = Limits(lut=1, ff=1, bram18=1, uram=1, dsp=1, memory_dsp_mean=1)
# two stages of 80 LUT; each card has one 100-LUT SLR, so an instance must span both cards
TWO_CARD_MODEL = [[(50, Resources(80, 0, 0, 0, 0), 8)], [(50, Resources(80, 0, 0, 0, 0), 8)]]


def split_over_switches(uplink_gbps: float):
    cluster = toy_cluster([[100], [100]], [0, 0])
    cards = [dataclasses.replace(card, switch=f"leaf-{i}") for i, card in enumerate(cluster.cards)]
    switches = {f"leaf-{i}": SwitchSpec(name=f"leaf-{i}", uplink_gbps=uplink_gbps, to="spine") for i in range(2)}
    return dataclasses.replace(cluster, cards=cards, switches=switches)


def test_instance_spans_cards_and_pays_the_vnx_stack():
    plan = solve(chain("two", TWO_CARD_MODEL), toy_cluster([[100], [100]], [0, 0]), limits=LIMITS)
    (instance,) = plan.instances
    assert [s.node for s in instance.segments] == ["node0", "node1"]
    # 1000 bits per frame at 100 MHz / 50 cycles = 2 Gb/s on the cut
    assert instance.segments[0].egress_gbps == pytest.approx(2.0)
    assert instance.segments[1].ingress_gbps == pytest.approx(2.0)


def test_uplink_capacity_limits_cross_switch_cuts():
    graph = chain("two", TWO_CARD_MODEL)
    assert solve(graph, split_over_switches(uplink_gbps=10), limits=LIMITS).total_fps > 0
    with pytest.raises(InfeasibleError):
        solve(graph, split_over_switches(uplink_gbps=1), limits=LIMITS)


def test_vnx_stack_must_fit_the_ethernet_slr():
    # the VNx stack costs 10 LUT in the toy catalog: 80 + 10 > 85 leaves no room to cut between the cards
    with pytest.raises(InfeasibleError):
        solve(chain("two", TWO_CARD_MODEL), toy_cluster([[85], [85]], [0, 0]), limits=LIMITS)
