"""Routes: the ways one instance can run through a group of cards.

A route is a sequence of distinct cards; on each card a monotone walk over adjacent SLRs. A card passes the
stream on from its Ethernet SLR and the next card receives it on its Ethernet SLR (where VNx sits)."""

from __future__ import annotations

from ..cluster import Card

Route = tuple[tuple[int, int], ...]  # (card, slr) slots in stream order


def _walk(n: int, start: int, end: int) -> list[int]:
    step = 1 if end >= start else -1
    return list(range(start, end + step, step))


def routes(cards: list[Card], max_cards: int) -> list[Route]:
    """Every route over the group: card sequences of distinct cards, monotone SLR walks, eth hand-offs."""
    out: list[Route] = []

    def extend(prefix: list[int]) -> None:
        k = len(prefix)
        for last_end in range(cards[prefix[-1]].type.n_slrs):
            out.extend(_compose(cards, prefix, last_end))
        if k < max_cards:
            for c in range(len(cards)):
                if c not in prefix:
                    extend(prefix + [c])

    for c in range(len(cards)):
        extend([c])
    return sorted(set(out), key=lambda r: (len({c for c, _ in r}), len(r), r))


def _compose(cards: list[Card], seq: list[int], last_end: int) -> list[Route]:
    if len(seq) == 1:
        return [tuple((seq[0], s) for s in _walk(0, start, last_end)) for start in range(cards[seq[0]].type.n_slrs)]
    first, rest = seq[0], seq[1:]
    result = []
    for start in range(cards[first].type.n_slrs):
        slots = [(first, s) for s in _walk(0, start, cards[first].type.eth_slr)]
        for middle in rest[:-1]:
            slots.append((middle, cards[middle].type.eth_slr))
        last = rest[-1]
        slots += [(last, s) for s in _walk(0, cards[last].type.eth_slr, last_end)]
        result.append(tuple(slots))
    return result
