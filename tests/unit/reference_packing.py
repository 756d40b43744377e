"""An independent exact reference for the solver's model, for tiny problems.

It enumerates every single-instance configuration directly as "stage -> (card, SLR) and option" assignments
that obey the placement rules (monotone SLR walk per card, cards visited once, card hand-offs between
Ethernet SLRs), then lets CP-SAT choose how many copies of each configuration to run. Integer resources
only; the mean-utilisation limit is left out, so tests set it to 1.0 and give BRAM/URAM no capacity.
"""

from __future__ import annotations

import itertools

from elasticdf_partitioner.cluster import LINK_GBPS, Cluster
from elasticdf_partitioner.solver.stages import Pipeline
from ortools.sat.python import cp_model

SCALE = 1000


def _path(card_type, a: int, b: int) -> list[tuple[int, int]]:
    step = 1 if b > a else -1
    return [(s, s + step) for s in range(a, b, step)]


def _config(pipeline: Pipeline, cluster: Cluster, slots, options):
    """Resources, SLL, network and ETH use of one instance, or None if the assignment breaks a rule."""
    cards = cluster.cards
    visited, direction = [slots[0][0]], {}
    boundaries: dict[tuple[int, int, int], int] = {}
    cuts = []
    for p in range(1, len(slots)):
        (ca, sa), (cb, sb) = slots[p - 1], slots[p]
        width = sum(options[e.src].out_widths[e.src_pos] for e in pipeline.crossing(p))
        hops = []
        if ca == cb:
            hops = [(ca, x, y) for x, y in _path(None, sa, sb)]
        else:
            if cb in visited:
                return None
            eth_a, eth_b = cards[ca].type.eth_slr, cards[cb].type.eth_slr
            hops = [(ca, x, y) for x, y in _path(None, sa, eth_a)] + [(cb, x, y) for x, y in _path(None, eth_b, sb)]
            cuts.append((ca, cb, p))
            visited.append(cb)
            if eth_b != sb:
                direction[cb] = 1 if sb > eth_b else -1
        for card, x, y in hops:
            d = 1 if y > x else -1
            if direction.setdefault(card, d) != d:
                return None
            boundaries[card, x, y] = boundaries.get((card, x, y), 0) + width
    fclk = min(cards[c].type.fclk_mhz for c in visited)
    fps = fclk * 1e6 / max(o.cycles for o in options)
    use = {}
    for (c, s), o in zip(slots, options):
        use[c, s] = [a + b for a, b in zip(use.get((c, s), [0] * 5), o.res)]
    net = [(a, b, sum(e.bits_per_frame for e in pipeline.crossing(p)) * fps / 1e9) for a, b, p in cuts]
    eth_cards = {a for a, _, _ in cuts} | {b for _, b, _ in cuts}
    return fps, use, boundaries, net, eth_cards, set(visited)


def best_total_fps(pipeline: Pipeline, cluster: Cluster, limits, exclusive: bool = False) -> float:
    cards = cluster.cards
    all_slots = [(c, s) for c in range(len(cards)) for s in range(cards[c].type.n_slrs)]
    configs = []
    for slots in itertools.product(all_slots, repeat=len(pipeline.stages)):
        for options in itertools.product(*(st.options for st in pipeline.stages)):
            config = _config(pipeline, cluster, slots, options)
            if config is not None:
                configs.append(config)
    ip = cluster.catalog.ip_costs
    free = {(c, s): cards[c].type.usable(s, ip, limits, with_eth=False) for c, s in all_slots}
    eth = [[x * f for x, f in zip(ip.eth, limits.as_resources())] for _ in cards]
    model = cp_model.CpModel()
    n = [model.new_int_var(0, 64, f"n{j}") for j in range(len(configs))]
    e = [model.new_bool_var(f"eth{c}") for c in range(len(cards))]
    for j, (_, _, _, _, eth_cards, _) in enumerate(configs):
        for c in eth_cards:
            model.add(n[j] == 0).only_enforce_if(e[c].Not())
    for c, s in all_slots:
        for k in range(5):
            terms = [n[j] * int(cfg[1][c, s][k]) for j, cfg in enumerate(configs) if (c, s) in cfg[1]]
            if s == cards[c].type.eth_slr:
                terms.append(e[c] * int(round(eth[c][k])))
            model.add(sum(terms) <= int(free[c, s][k] + 1e-9))
    for c in range(len(cards)):
        t = cards[c].type
        for x in range(t.n_slrs):
            for y in (x - 1, x + 1):
                terms = [n[j] * cfg[2][c, x, y] for j, cfg in enumerate(configs) if (c, x, y) in cfg[2]]
                if terms:
                    model.add(sum(terms) <= t.sll_per_pair)
        port = int(LINK_GBPS * t.qsfp_ports * SCALE)
        out_terms = [n[j] * int(g * SCALE) for j, cfg in enumerate(configs) for a, _, g in cfg[3] if a == c]
        in_terms = [n[j] * int(g * SCALE) for j, cfg in enumerate(configs) for _, b, g in cfg[3] if b == c]
        if out_terms:
            model.add(sum(out_terms) <= port)
        if in_terms:
            model.add(sum(in_terms) <= port)
    if exclusive:  # a card hosts (segments of) one instance at most
        for c in range(len(cards)):
            model.add(sum(n[j] for j, cfg in enumerate(configs) if c in cfg[5]) <= 1)
    model.maximize(sum(n[j] * round(cfg[0] * SCALE) for j, cfg in enumerate(configs)))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 60
    status = solver.solve(model)
    assert status == cp_model.OPTIMAL, solver.status_name(status)
    return sum(solver.value(n[j]) * cfg[0] for j, cfg in enumerate(configs))
