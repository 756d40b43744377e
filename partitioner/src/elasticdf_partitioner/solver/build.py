"""Turn group packings into the Plan, and explain why there is none."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from ..catalog import Limits
from ..cluster import Card, Cluster
from ..errors import InfeasibleError
from ..graph import ModelGraph
from ..plan import Clock, Instance, Plan, Segment
from ..resources import RESOURCE_KINDS, Resources
from .placers import Placement
from .stages import Pipeline, pareto
from .state import GroupState

Model = TypeVar("Model", bound=BaseModel)
VNX_HALF_RTT_S = 1.071e-6 / 2
LINK_BPS = 100e9


def _latency_ms(pipeline: Pipeline, placement: Placement) -> float:
    cycles = sum(o.cycles for piece in placement.pieces for o in piece.options)
    seconds = cycles / (placement.fclk_mhz * 1e6)
    for _, _, position, _ in placement.card_cuts:
        bits = sum(e.bits_per_frame for e in pipeline.crossing(position))
        seconds += VNX_HALF_RTT_S + bits / LINK_BPS
    return round(seconds * 1e3, 4)


def _instance(pipeline: Pipeline, cluster: Cluster, cards: list[Card], placement: Placement, memo: dict,
              card_types: tuple[str, ...]) -> Instance:
    """The placement's instance on these cards (of these types). Copies of a pattern share their placements, so
    the instance is built once per placement and card types and only re-addressed (a 10,000-card plan has ~10^5
    of them)."""
    key = (id(placement), card_types)
    if key not in memo:
        memo[key] = _instance_template(pipeline, cluster, cards, placement)
    template, segments = memo[key]
    return _stamped(template, segments=[_stamped(segment, node=cards[g].node, card=cards[g].index)
                                        for g, segment in segments])


def _stamped(template: Model, **fields) -> Model:
    """What `template.model_copy(update=fields)` makes (a shallow copy, the fields replaced, not validated), at
    half its cost: without its generic copies of the (here empty) extra and private attributes, and sharing the
    set of fields set (the templates set every field, so no assignment to a copy can change it)."""
    copy = object.__new__(type(template))
    object.__setattr__(copy, "__dict__", {**template.__dict__, **fields})
    object.__setattr__(copy, "__pydantic_fields_set__", template.__pydantic_fields_set__)
    object.__setattr__(copy, "__pydantic_extra__", None)
    object.__setattr__(copy, "__pydantic_private__", None)
    return copy


def _instance_template(pipeline: Pipeline, cluster: Cluster, cards: list[Card],
                       placement: Placement) -> tuple[Instance, list[tuple[int, Segment]]]:
    segments = _segment_templates(pipeline, cluster, cards, placement)
    synth = min(cards[p.card].type.synth_clock_mhz for p in placement.pieces)
    return Instance(fps=round(placement.fps, 2), fclk_mhz=placement.fclk_mhz,
                    build_fclk_mhz=synth if synth != placement.fclk_mhz else None, cycles_per_frame=placement.cycles,
                    latency_ms=_latency_ms(pipeline, placement), segments=[]), segments


def _segment_templates(pipeline: Pipeline, cluster: Cluster, cards: list[Card],
                       placement: Placement) -> list[tuple[int, Segment]]:
    runs: list[list] = []
    for piece in placement.pieces:
        if runs and runs[-1][0] == piece.card:
            runs[-1][1].append(piece)
        else:
            runs.append([piece.card, [piece]])
    ingress = {dst: gbps for _, dst, _, gbps in placement.card_cuts}
    egress = {src: gbps for src, _, _, gbps in placement.card_cuts}
    segments = []
    ip = cluster.catalog.ip_costs
    for group_index, pieces in runs:
        card = cards[group_index]
        filled = [p for p in pieces if p.first <= p.last]
        first_stage, last_stage = filled[0].first, filled[-1].last
        first_layer = pipeline.stages[first_stage].layers[0]
        last_layer = pipeline.stages[last_stage].layers[-1]
        used = Resources()
        for p in filled:
            for o in p.options:
                used = used + o.res
        slrs = [p.slr for p in pieces]
        capacity = Resources()
        for s in sorted(set(slrs)):
            capacity = capacity + (Resources.from_list(card.type.slrs[s]) - card.type.shell_overhead(s, ip))
        segments.append((group_index, Segment(
            node=card.node, card=card.index, card_type=card.type.name, slrs=slrs,
            layers=[pipeline_layer_name(pipeline, first_stage, 0), pipeline_layer_name(pipeline, last_stage, -1)],
            layer_range=[first_layer, last_layer],
            ingress_gbps=round(ingress.get(group_index, 0.0), 3), egress_gbps=round(egress.get(group_index, 0.0), 3),
            resources={k: round(v, 1) for k, v in used.as_dict().items()},
            utilisation={k: round(u / c, 4) if c else 0.0 for k, u, c in zip(RESOURCE_KINDS, used, capacity)},
            slr_layers={str(p.slr): [pipeline.stages[p.first].layers[0], pipeline.stages[p.last].layers[-1]]
                        for p in filled},
            folding=_pieces_folding(pipeline, filled),
        )))
    return segments


def pipeline_layer_name(pipeline: Pipeline, stage: int, which: int) -> str:
    return pipeline.stages[stage].names[which]


def _folding(graph: ModelGraph, pipeline: Pipeline, placement: Placement) -> dict[str, dict]:
    return _pieces_folding(pipeline, placement.pieces)


def _pieces_folding(pipeline: Pipeline, pieces) -> dict[str, dict]:
    config: dict[str, dict] = {}
    for piece in pieces:
        for stage_index, option in zip(range(piece.first, piece.last + 1), piece.options):
            for name, layer_option in zip(pipeline.stages[stage_index].names, option.layer_options):
                config[name] = layer_option.settings()
    return config


def build_plan(graph, pipeline, cluster, assignments, objective, bound, optimal, seconds) -> Plan:
    instances, used_cards = _instances(pipeline, cluster, assignments)
    instances.sort(key=lambda i: (i.segments[0].node, i.segments[0].card, -i.fps))
    by_id = {c.id: c for c in cluster.cards}
    cost = sum(cluster.cost_per_hour(by_id[i].type.name) for i in used_cards)
    total = sum(i.fps for i in instances)
    first = assignments[0].result.placements[0]
    return Plan(
        objective=objective, model=graph.name, fclk_mhz=min(i.fclk_mhz for i in instances), instances=instances,
        total_fps=round(total, 2), cards_used=len(used_cards), cost_per_hour=round(cost, 4),
        fps_per_dollar_hour=round(total / cost, 2) if cost else 0.0, solve_seconds=round(seconds, 4),
        bound=round(bound, 2) if bound != float("inf") else None, optimal=optimal,
        folding=_folding(graph, pipeline, first),
        clocks={c.type.name: Clock(mhz=c.type.fclk_mhz, source=c.type.fclk_source,
                                   build_mhz=c.type.build_clock_mhz) for c in cluster.cards},
        resource_scale={c.type.name: c.type.resource_scale for c in cluster.cards if c.type.resource_scale},
    )


def _instances(pipeline, cluster, assignments) -> tuple[list[Instance], set[int]]:
    """Every assignment's instances, and the ids of the cards they use."""
    instances: list[Instance] = []
    used_cards: set[int] = set()
    memo: dict = {}
    for assignment in assignments:
        result, card_types = assignment.result, tuple(card.type.name for card in assignment.cards)
        for placement in result.placements:
            instances.append(_instance(pipeline, cluster, assignment.cards, placement, memo, card_types))
        used_key = ("used", id(result))  # copies of a pattern share their result
        if used_key not in memo:
            memo[used_key] = sorted({p.card for placement in result.placements for p in placement.pieces})
        used_cards.update(assignment.cards[g].id for g in memo[used_key])
    return instances, used_cards


def explain_infeasible(pipeline: Pipeline, cluster: Cluster, limits: Limits, target_fps: float | None = None,
                       achieved: float | None = None) -> InfeasibleError:
    """Say what is short, where, and by how much."""
    if achieved is not None:
        return InfeasibleError(
            f"target {target_fps:.0f} fps is out of reach: the best plan on these {len(cluster.cards)} cards gives "
            f"{achieved:.0f} fps, short by {target_fps - achieved:.0f} fps; add cards or lower --target-fps")
    slowest = max(o.cycles for s in pipeline.stages for o in s.options)
    state = GroupState.fresh(cluster.cards, cluster.catalog, limits)
    best_slot = max(((c, s) for c in range(len(cluster.cards)) for s in range(cluster.cards[c].type.n_slrs)),
                    key=lambda cs: state.slots[cs[0]][cs[1]].free[0])
    for stage in pipeline.stages:
        cheapest = pareto(stage.options, slowest)
        if not any(state.fits(c, s, o.res) for o in cheapest
                   for c in range(len(cluster.cards)) for s in range(cluster.cards[c].type.n_slrs)):
            o = min(cheapest, key=lambda o: o.res[0])
            c, s = best_slot
            free = state.slots[c][s].free
            short = {k: round(need - have) for k, need, have in zip(RESOURCE_KINDS, o.res, free) if need > have}
            card = cluster.cards[c]
            return InfeasibleError(
                f"layer {stage.names[0]} does not fit any SLR even at its smallest folding: it needs "
                f"{_fmt(o.res)}; the roomiest SLR ({card.type.name} SLR{s} on {card.node}) offers {_fmt(free)}; "
                f"short by {short} (raise the utilisation limits or use a bigger card)")
    need = pipeline.least_resources(slowest)
    have = state.free_total()
    short = {k: round(n - h) for k, n, h in zip(RESOURCE_KINDS, need, have) if n > h}
    if short:
        return InfeasibleError(
            f"one instance of {pipeline.model} needs at least {_fmt(need)} at its smallest folding; "
            f"all {len(cluster.cards)} cards offer {_fmt(have)}; short by {short}")
    return InfeasibleError(
        f"{pipeline.model} fits the total resources of the {len(cluster.cards)} cards but no split respects the "
        f"SLR crossings ({cluster.cards[0].type.sll_per_pair} SLLs per SLR pair) and 100 Gb/s per link between "
        f"cards; allow more cards per instance or raise the utilisation limits")


def _fmt(res) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in zip(RESOURCE_KINDS, res))
