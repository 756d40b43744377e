"""Draw a plan's floorplan: one column per card, its SLRs stacked, each instance's layers as a coloured band
on the SLRs holding them, card-to-card cuts as arrows labelled with their Gb/s."""

from __future__ import annotations

from pathlib import Path

from .plan import Plan


def draw(plan: Plan, path: str | Path, n_slrs: dict[str, int]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cards = sorted({(s.node, s.card, s.card_type) for i in plan.instances for s in i.segments})
    column = {(node, card): x for x, (node, card, _) in enumerate(cards)}
    width = max(4.0, 1.6 * len(cards))
    fig, ax = plt.subplots(figsize=(min(width, 40), 4.5))
    colours = plt.get_cmap("tab10")
    for node, card, card_type in cards:
        x = column[node, card]
        for s in range(n_slrs[card_type]):
            ax.add_patch(Rectangle((x, s), 0.9, 0.95, fill=False, lw=1))
            ax.text(x + 0.02, s + 0.85, f"SLR{s}", fontsize=6)
        ax.text(x + 0.45, -0.3, f"{node}\n{card_type} #{card}", ha="center", va="top", fontsize=7)
    for i, instance in enumerate(plan.instances):
        colour = colours(i % 10)
        bands = sum(len(seg.slr_layers) for seg in instance.segments)
        offset = (i % 4) * 0.2
        for seg in instance.segments:
            x = column[seg.node, seg.card]
            for slr, (first, last) in seg.slr_layers.items():
                ax.add_patch(Rectangle((x + 0.05 + offset, int(slr) + 0.1), 0.18, 0.75, color=colour, alpha=0.7))
                ax.text(x + 0.14 + offset, int(slr) + 0.47, f"i{i}\n{first}-{last}", fontsize=5, ha="center",
                        va="center", rotation=90 if bands > 6 else 0)
        for a, b in zip(instance.segments, instance.segments[1:]):
            xa, xb = column[a.node, a.card] + 0.9, column[b.node, b.card]
            ya, yb = a.slrs[-1] + 0.5, b.slrs[0] + 0.5
            ax.annotate("", xy=(xb, yb), xytext=(xa, ya), arrowprops={"arrowstyle": "->", "color": colour})
            ax.text((xa + xb) / 2, (ya + yb) / 2 + 0.1, _rate(a.egress_gbps), fontsize=6, ha="center")
    top = max(n_slrs[t] for _, _, t in cards)
    ax.set_xlim(-0.1, len(cards))
    ax.set_ylim(-0.8, top + 0.2)
    ax.axis("off")
    ax.set_title(f"{plan.model}: {len(plan.instances)} instances, {plan.total_fps:,.0f} fps, "
                 f"{plan.cards_used} cards, ${plan.cost_per_hour:.2f}/h", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def _rate(gbps: float) -> str:
    return f"{gbps:.1f} Gb/s" if gbps >= 1 else f"{gbps * 1000:.0f} Mb/s"
