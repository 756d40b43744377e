"""Cards -> the Node labels and annotations the operator's inventory reads (operator/inventory.py,
hack/devcluster.py): label elasticdf.io/card-types (distinct types, sorted, '.'-joined: label values cannot
hold commas), annotation elasticdf.io/cards (the ordered card list), and for humans and the fabric the shells
and QSFP MACs. Per-type counts are the device plugin's capacity (amd.com/<shell>-<timestamp>), not ours."""

from __future__ import annotations

import json

from .cards import Card

LABEL_CARD_TYPES = "elasticdf.io/card-types"
LABEL_RUNTIME = "elasticdf.io/runtime"  # "xrt": the operator's auto mode runs segments on the cards
ANNOTATION_CARDS = "elasticdf.io/cards"
ANNOTATION_CARD_COUNTS = "elasticdf.io/card-counts"
ANNOTATION_SHELLS = "elasticdf.io/shells"
ANNOTATION_QSFP_MACS = "elasticdf.io/qsfp-macs"
OWNED_LABELS = (LABEL_CARD_TYPES, LABEL_RUNTIME)
OWNED_ANNOTATIONS = (ANNOTATION_CARDS, ANNOTATION_CARD_COUNTS, ANNOTATION_SHELLS, ANNOTATION_QSFP_MACS)


def node_patch(cards: list[Card], xrt: bool) -> dict:
    """A merge patch; keys of ours that no longer apply are set to None so the API server removes them."""
    labels: dict[str, str | None] = dict.fromkeys(OWNED_LABELS)
    annotations: dict[str, str | None] = dict.fromkeys(OWNED_ANNOTATIONS)
    if cards:
        types = [c.type for c in cards]
        labels[LABEL_CARD_TYPES] = ".".join(sorted(set(types)))
        annotations[ANNOTATION_CARDS] = ",".join(types)
        annotations[ANNOTATION_CARD_COUNTS] = json.dumps({t: types.count(t) for t in sorted(set(types))})
        if any(c.shell for c in cards):
            annotations[ANNOTATION_SHELLS] = ",".join(c.shell for c in cards)
        if any(c.macs for c in cards):
            annotations[ANNOTATION_QSFP_MACS] = json.dumps({c.bdf: list(c.macs) for c in cards})
        if xrt:
            labels[LABEL_RUNTIME] = "xrt"
    return {"metadata": {"labels": labels, "annotations": annotations}}
