"""`elasticdf plan`: solve for a model on a cluster, print the plan, optionally write JSON/FINN files/picture."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .catalog import Limits, load_catalog, with_clocks, with_resource_scale
from .cluster import load_cluster
from .errors import InputError
from .graph import ModelGraph
from .plan import Plan
from .solver import OBJECTIVES, solve
from .solver.pack import PackSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo name (see `elasticdf zoo`) or PATH.onnx")
    parser.add_argument("--cluster", required=True, help="cluster description YAML (DESIGN §5.2)")
    parser.add_argument("--objective", default="throughput", choices=OBJECTIVES)
    parser.add_argument("--target-fps", type=float, default=None, help="fps the cost objective must reach")
    parser.add_argument("--json", dest="json_out", help="write the plan JSON here")
    parser.add_argument("--finn-out", help="write FINN folding config and per-card floorplan JSON here")
    parser.add_argument("--picture", help="draw the floorplan to this .png or .svg")
    parser.add_argument("--catalog", help="extra card types YAML")
    parser.add_argument("--limits", help="utilisation limits as JSON, e.g. '{\"lut\": 0.8}'")
    parser.add_argument("--exclusive-cards", action="store_true",
                        help="one instance per card, as the operator deploys (one bitstream per card)")
    parser.add_argument("--min-instance-fps", type=float, default=0.0,
                        help="latency floor: no instance slower than this (prints the fps it costs)")
    parser.add_argument("--clock", action="append", default=[], metavar="TYPE=MHZ",
                        help="achieved kernel clock of a card type, e.g. a build report's Fmax (repeatable)")
    parser.add_argument("--build-out", metavar="DIR",
                        help="write DIR/<build tag>/, the build bundle of every distinct card build of the plan")
    parser.add_argument("--build-reports", metavar="DIR",
                        help="take each card type's clock from the build reports below DIR (report.json beside "
                             "build.json; the lowest per card type), and scale its capacity by what the builds used "
                             "/ what was estimated (the largest ratio per resource); --clock still overrides")
    parser.add_argument("--certify", action="store_true",
                        help="also prove the LP bound over instance configurations (slower; plans that reach "
                             "it are marked optimal)")


def plan_for(args: argparse.Namespace) -> tuple[Plan, ModelGraph]:
    """The plan the `plan` arguments ask for, and the model graph it was made for."""
    from .modelio import model_graph

    cluster = load_cluster(args.cluster, _catalog(args))
    graph = model_graph(args.model)
    settings = PackSettings(exclusive_cards=args.exclusive_cards, min_instance_fps=args.min_instance_fps or 0.0)
    return solve(graph, cluster, args.objective, args.target_fps, _limits(args.limits), settings,
                 certify=args.certify), graph


def _catalog(args: argparse.Namespace):
    """The catalog with the build reports' clocks and resources, then the --clock overrides (a measured clock
    replaces the modelled default)."""
    catalog = load_catalog(args.catalog)
    if getattr(args, "build_reports", None):
        from .builds import lowest_clocks, read_reports, resource_scales

        reports = read_reports(args.build_reports)
        for card_type, (mhz, source, built_at) in lowest_clocks(reports).items():
            catalog = with_clocks(catalog, {card_type: mhz}, source, built_at)
        catalog = with_resource_scale(catalog, resource_scales([(rec, rep.resources) for rec, rep in reports]))
    clocks = {}
    for text in args.clock:
        name, _, mhz = text.partition("=")
        try:
            clocks[name.strip()] = float(mhz)
        except ValueError:
            raise InputError("--clock", f"expected TYPE=MHZ, e.g. u280=240, got {text!r}") from None
    return with_clocks(catalog, clocks, "measured (--clock)")


def _floor_tradeoff(args: argparse.Namespace, plan: Plan) -> str:
    """What the latency floor costs: the same plan without it."""
    free = argparse.Namespace(**{**vars(args), "min_instance_fps": 0.0, "certify": False})
    unfloored, _ = plan_for(free)
    slowest = min(i.fps for i in plan.instances)
    return (f"latency floor {args.min_instance_fps:,.0f} fps per instance: {plan.total_fps:,.0f} fps total "
            f"(slowest instance {slowest:,.0f} fps) vs {unfloored.total_fps:,.0f} fps without the floor "
            f"(slowest instance {min(i.fps for i in unfloored.instances):,.0f} fps)")


def run(args: argparse.Namespace, console: Console) -> int:
    plan, graph = plan_for(args)
    console.print(plan_table(plan))
    console.print(summary(plan))
    if args.min_instance_fps:
        console.print(_floor_tradeoff(args, plan))
    if args.json_out:
        Path(args.json_out).write_text(plan.model_dump_json(indent=2) + "\n")
    if args.finn_out:
        from .export import write_finn_outputs

        files = write_finn_outputs(plan, graph, args.finn_out)
        if args.model.endswith(".onnx"):
            from .finn_io import write_segment_onnx

            files += write_segment_onnx(plan, args.model, args.finn_out)
        console.print(f"wrote {len(files)} FINN files to {args.finn_out}")
    if args.build_out:
        console.print(builds_table(write_build_bundles(plan, args.model, args.build_out, args.catalog)))
    if args.picture:
        from .picture import draw

        draw(plan, args.picture, {name: c.n_slrs for name, c in load_catalog(args.catalog).cards.items()})
        console.print(f"floorplan picture: {args.picture}")
    return 0


def write_build_bundles(plan: Plan, model: str, out_dir: str, catalog: str | None) -> dict[Path, list]:
    """DIR/<build tag>/: the bundle of every distinct card build of the plan; bundle directory -> the cards
    ((node, card), record) that run it."""
    from elasticdf_contract.builds import build_tag

    from .builds import card_records, reference_identity
    from .bundle import model_dataflow, write_bundle

    cards, dataflow = load_catalog(catalog), model_dataflow(model)
    written: dict[Path, list] = {}
    for card, record in card_records(reference_identity(model), plan.instances).items():
        directory = Path(out_dir) / build_tag(record.digest)
        if directory not in written:
            write_bundle(record, model, directory, catalog=cards, dataflow=dataflow)
        written.setdefault(directory, []).append((card, record))
    return written


def builds_table(bundles: dict[Path, list]) -> Table:
    from .builds import hosted_ranges

    table = Table(title=f"{len(bundles)} card build bundle(s)")
    for column in ("bundle", "card type", "MHz", "hosted layer ranges", "cards"):
        table.add_column(column, justify="right" if column == "MHz" else "left")
    for directory, cards in bundles.items():
        record = cards[0][1]
        table.add_row(str(directory), record.card_type, f"{record.fclk_mhz:g}",
                      hosted_ranges(record),
                      ", ".join(f"{node}/{card}" for (node, card), _ in cards))
    return table


def _limits(text: str | None) -> Limits:
    if not text:
        return Limits()
    try:
        return Limits.model_validate(json.loads(text))
    except (ValueError, TypeError) as err:
        raise InputError("--limits", f"not valid limits JSON: {err}", list(Limits.model_fields)) from None


def plan_table(plan: Plan) -> Table:
    table = Table(title=f"{plan.model}: plan ({plan.objective})")
    for column in ("instance", "segment", "card", "SLRs", "layers", "fps", "latency ms", "cut Gb/s",
                   "LUT %", "BRAM %", "URAM %", "DSP %"):
        table.add_column(column, justify="right" if column not in ("card", "layers") else "left")
    for i, instance in enumerate(plan.instances):
        for j, seg in enumerate(instance.segments):
            u = seg.utilisation
            table.add_row(
                str(i) if j == 0 else "", str(j), f"{seg.node}/{seg.card} {seg.card_type}",
                "-".join(str(s) for s in seg.slrs), f"{seg.layers[0]} .. {seg.layers[1]}",
                f"{instance.fps:,.0f}" if j == 0 else "", f"{instance.latency_ms:.3f}" if j == 0 else "",
                f"{seg.egress_gbps:.1f}" if seg.egress_gbps else "",
                *(f"{100 * u[k]:.0f}" for k in ("lut", "bram18", "uram", "dsp")))
    return table


def summary(plan: Plan) -> str:
    bound = f"{plan.bound:,.0f}" if plan.bound is not None else "n/a"
    gap = f" ({100 * plan.total_fps / plan.bound:.0f}% of bound)" if plan.bound else ""
    clocks = ", ".join(f"{t} {c.mhz:g} MHz ({c.source})" for t, c in sorted(plan.clocks.items()))
    return (f"total {plan.total_fps:,.0f} fps{gap}, bound {bound} fps ({plan.bound_method}), "
            f"{len(plan.instances)} instances on "
            f"{plan.cards_used} cards at >= {plan.fclk_mhz:.0f} MHz, ${plan.cost_per_hour:.2f}/h, "
            f"{plan.fps_per_dollar_hour:,.0f} fps per $/h, solved in {plan.solve_seconds * 1000:.0f} ms"
            f"{' (optimal)' if plan.optimal else ''}; clocks: {clocks}")
