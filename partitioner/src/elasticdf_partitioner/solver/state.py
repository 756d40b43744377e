"""What is left of a card group while instances are placed: per-SLR resources and the mean-utilisation
budget, SLLs per SLR boundary, the VNx stacks opened, QSFP port and leaf-uplink bandwidth. Every change goes
through an undo log, so the depth-first search can back out of a placement exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..catalog import Catalog, Limits
from ..cluster import LINK_GBPS, Card
from ..resources import Resources

EPS = 1e-9
AVG_KINDS = (2, 3, 4)  # bram18, uram, dsp: the kinds the mean-utilisation limit covers


@dataclass
class _Slot:
    free: list[float]
    guide: tuple[float, ...]  # capacity after shell IP, for the mean-utilisation limit
    avg_free: float

    @property
    def avg_weights(self) -> np.ndarray:
        if "_avg_weights" not in self.__dict__:
            self.__dict__["_avg_weights"] = np.array(
                [1.0 / self.guide[k] if k in AVG_KINDS and self.guide[k] > 0 else 0.0 for k in range(5)])
        return self.__dict__["_avg_weights"]


@dataclass
class GroupState:
    """What is left on each SLR, SLL boundary and network port of the group's cards."""

    cards: list[Card]
    slots: list[list[_Slot]]
    sll: list[dict[tuple[int, int], float]]
    eth_cost: list[Resources]
    eth_on: list[bool]
    net_out: list[float]
    net_in: list[float]
    uplinks: dict[str, float] = field(default_factory=dict)  # leaf switch -> Gb/s left on its uplink
    exclusive: bool = False  # one instance per card (one bitstream, one segment pod per card)
    taken: list[bool] = field(default_factory=list)
    min_fps: float = 0.0  # instances slower than this are not placed (a latency floor)
    log: list = field(default_factory=list)

    @classmethod
    def fresh(cls, cards: list[Card], catalog: Catalog, limits: Limits,
              uplinks: dict[str, float] | None = None, exclusive: bool = False) -> GroupState:
        slots, sll, eth_cost = [], [], []
        ip = catalog.ip_costs
        for card in cards:
            t = card.type
            row = []
            for s in range(t.n_slrs):
                guide = Resources.from_list(t.slrs[s]) - t.shell_overhead(s, ip)
                kinds = [k for k in AVG_KINDS if guide[k] > 0]
                row.append(_Slot(list(t.usable(s, ip, limits, with_eth=False)), tuple(guide),
                                 limits.memory_dsp_mean * len(kinds)))
            slots.append(row)
            pairs = {}
            for s in range(t.n_slrs - 1):
                pairs[(s, s + 1)] = pairs[(s + 1, s)] = float(t.sll_per_pair)
            sll.append(pairs)
            eth_cost.append(Resources.from_list(ip.eth).scale(limits.as_resources()))
        ports = [LINK_GBPS * max(c.type.qsfp_ports, 0) for c in cards]
        return cls(cards, slots, sll, eth_cost, [False] * len(cards), list(ports), list(ports), dict(uplinks or {}),
                   exclusive, [False] * len(cards))

    def cards_free(self, cards: set[int]) -> bool:
        """With exclusive cards, an instance may only use cards no other instance holds."""
        return not self.exclusive or not any(self.taken[c] for c in cards)

    def claim(self, cards: set[int]) -> None:
        if self.exclusive:
            for c in cards:
                self._set(self.taken, c, True)

    def uplink_room(self, src: int, dst: int, gbps: float) -> bool:
        """Traffic between cards under different leaf switches crosses both leaves' uplinks."""
        switches = {self.cards[src].switch, self.cards[dst].switch}
        return len(switches) == 1 or all(gbps <= self.uplinks.get(sw, math.inf) + EPS for sw in switches)

    def use_uplinks(self, src: int, dst: int, gbps: float) -> None:
        switches = {self.cards[src].switch, self.cards[dst].switch}
        if len(switches) > 1:
            for sw in switches:
                if sw in self.uplinks:
                    self._set(self.uplinks, sw, self.uplinks[sw] - gbps)

    # -- mutations with an undo log -------------------------------------------------------------
    def _set(self, obj, key, value) -> None:
        self.log.append((obj, key, obj[key]))
        obj[key] = value

    def mark(self) -> int:
        return len(self.log)

    def undo(self, mark: int) -> None:
        while len(self.log) > mark:
            obj, key, value = self.log.pop()
            obj[key] = value

    def avg_vector(self, card: int, slr: int) -> np.ndarray:
        """Weights that turn a resource vector into its share of the mean-utilisation budget of this SLR."""
        return self.slots[card][slr].avg_weights

    def avg_weight(self, card: int, slr: int, res: Resources) -> float:
        guide = self.slots[card][slr].guide
        return sum(res[k] / guide[k] for k in AVG_KINDS if guide[k] > 0)

    def fits(self, card: int, slr: int, res: Resources) -> bool:
        slot = self.slots[card][slr]
        return all(r <= f + EPS for r, f in zip(res, slot.free)) and \
            self.avg_weight(card, slr, res) <= slot.avg_free + EPS

    def take(self, card: int, slr: int, res: Resources) -> None:
        slot = self.slots[card][slr]
        self._set(slot.__dict__, "free", [f - r for f, r in zip(slot.free, res)])
        self._set(slot.__dict__, "avg_free", slot.avg_free - self.avg_weight(card, slr, res))

    def cross(self, card: int, slr: int, next_slr: int, width: float) -> bool:
        """Reserve `width` SLLs on the card's boundary from `slr` to `next_slr`; False (nothing taken) if fewer
        are left."""
        boundary = self.sll[card]
        if width > boundary[(slr, next_slr)] + EPS:
            return False
        self._set(boundary, (slr, next_slr), boundary[(slr, next_slr)] - width)
        return True

    def open_eth(self, card: int) -> bool:
        """Reserve the VNx stack on the card's Ethernet SLR (once); False if it does not fit."""
        if self.eth_on[card]:
            return True
        eth_slr = self.cards[card].type.eth_slr
        if not self.fits(card, eth_slr, self.eth_cost[card]):
            return False
        self.take(card, eth_slr, self.eth_cost[card])
        self._set(self.eth_on, card, True)
        return True

    def free_total(self) -> Resources:
        """Per resource, the sum over SLRs of what is left (an overdrawn SLR counts 0)."""
        frees = [slot.free for row in self.slots for slot in row]
        return Resources(*(sum((left if left > 0.0 else 0.0 for left in kind), 0.0) for kind in zip(*frees)))
