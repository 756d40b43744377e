"""The `elasticdf` command line.

Each subcommand is a pair of functions in COMMANDS: add_arguments(parser) and run(args, console) -> exit code.
User errors (ElasticDFError: bad input, no feasible plan) print one message to stderr and exit 2, without a
traceback; any other exception is a bug and propagates (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from .catalog import CardType, Catalog, Limits, load_catalog
from .errors import ElasticDFError
from .resources import RESOURCE_KINDS, Resources

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace, Console], int]


# --- cards ---------------------------------------------------------------------------------------------------


def _cards_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", help="YAML file adding or overriding card types")


def card_totals(card: CardType) -> Resources:
    total = Resources()
    for slr in card.slrs:
        total = total + Resources.from_list(slr)
    return total


def usable_capacity(card: CardType, catalog: Catalog, limits: Limits | None = None,
                    with_eth: bool = False) -> Resources:
    """What one card offers a design: Σ over SLRs of limit × (capacity - shell IP [- VNx stack])."""
    limits = limits or Limits()
    total = Resources()
    for slr in range(card.n_slrs):
        total = total + card.usable(slr, catalog.ip_costs, limits, with_eth)
    return total


def _cards_run(args: argparse.Namespace, console: Console) -> int:
    catalog = load_catalog(args.catalog)
    table = Table(title="Alveo card catalog (raw per-card totals; usable = default limits after shell IP)")
    for column in ("card", "part", "SLRs", "LUT", "FF", "BRAM18", "URAM", "DSP", "usable LUT", "DDR/HBM SLRs",
                   "eth SLR", "QSFP", "MHz", "$/h"):
        table.add_column(column, justify="left" if column in ("card", "part", "DDR/HBM SLRs") else "right")
    for name in sorted(catalog.cards):
        card = catalog.cards[name]
        total = card_totals(card)
        memory = ",".join(str(s) for s in card.ddr_slrs) or "-"
        if card.hbm_slr is not None:
            memory += f" / HBM {card.hbm_slr}"
        table.add_row(name, card.part, str(card.n_slrs), *(f"{int(v):,}" for v in total),
                      f"{int(usable_capacity(card, catalog).lut):,}", memory, str(card.eth_slr), str(card.qsfp_ports),
                      f"{card.fclk_mhz:g}", f"{card.cost_per_hour:.2f}")
    console.print(table)
    return 0


# --- zoo -----------------------------------------------------------------------------------------------------


def _zoo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "elasticdf zoo [MODEL] [--catalog FILE]\n       elasticdf zoo export MODEL -o FILE.onnx [--seed N]"
    parser.add_argument("model", nargs="?", help="zoo name or PATH.onnx: also print its layer table; or `export`")
    parser.add_argument("export_model", nargs="?", metavar="MODEL",
                        help="(zoo export) the model to write as a FINN dataflow ONNX")
    parser.add_argument("--catalog", help="YAML file adding or overriding card types")
    parser.add_argument("-o", "--output", help="(zoo export) the ONNX file to write")
    parser.add_argument("--seed", type=int, default=0, help="(zoo export) seed of the random weights and thresholds")


def _zoo_export(args: argparse.Namespace, console: Console) -> int:
    """`elasticdf zoo export MODEL -o FILE.onnx`: the model as a FINN dataflow ONNX with seeded parameters."""
    from pathlib import Path

    import onnx

    from .errors import InputError
    from .finn_io import export_finn
    from .zoo import load_model

    if not args.export_model or not args.output:
        raise InputError("zoo export", "usage: elasticdf zoo export MODEL -o FILE.onnx [--seed N]")
    model = load_model(args.export_model)
    proto = export_finn(model, seed=args.seed)
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    weights = sum(init.ByteSize() for init in proto.graph.initializer)
    console.print(f"wrote {path}: {model.name}, {len(proto.graph.node)} FINN dataflow nodes, "
                  f"{weights / 1e6:.1f} MB of parameters (seed {args.seed})")
    return 0


def _zoo_run(args: argparse.Namespace, console: Console) -> int:
    from .zoo import ZOO, load_model, predicted_fps

    if args.model == "export":
        return _zoo_export(args, console)

    catalog = load_catalog(args.catalog)
    names = [args.model] if args.model else sorted(ZOO)
    models = [load_model(name) for name in names]
    summary = Table(title="Models at their published folding (FINN v0.6 cost model)")
    for column in ("model", "layers", "max cycles", "bottleneck", "measured", "predicted @ same clock",
                   *(k.upper() for k in RESOURCE_KINDS)):
        summary.add_column(column, justify="left" if column in ("model", "bottleneck", "measured") else "right")
    for name, model in zip(names, models):
        entry = ZOO.get(name.lower())
        measured, predicted = "-", "-"
        if entry is not None and entry.measured is not None:
            m = entry.measured
            measured = f"{m.fps:,.0f} fps @ {m.fclk_mhz:g} MHz ({m.card})"
            fps = predicted_fps(model, m.fclk_mhz)
            predicted = f"{fps:,.0f} fps ({(fps - m.fps) / m.fps:+.1%})"
        bottleneck = max(model.layers, key=lambda layer: layer.current().cycles)
        summary.add_row(model.name, str(len(model.layers)), f"{model.max_cycles():,}", bottleneck.name, measured,
                        predicted, *(f"{int(v):,}" for v in model.total_resources()))
    console.print(summary)

    util = Table(title="Total resources vs one card's usable capacity (default limits LUT 0.7, FF 0.5, "
                       "BRAM/URAM/DSP 0.8, after shell IP); fps at the card's default clock")
    util.add_column("model")
    util.add_column("card")
    util.add_column("fps", justify="right")
    for kind in RESOURCE_KINDS:
        util.add_column(f"{kind.upper()} %", justify="right")
    util.add_column("fits", justify="center")
    for model in models:
        total = model.total_resources()
        for card_name in sorted(catalog.cards):
            card = catalog.cards[card_name]
            capacity = usable_capacity(card, catalog)
            shares = [used / cap if cap else (0.0 if used == 0 else float("inf")) for used, cap in zip(total, capacity)]
            cells = [f"{s:.0%}" if s != float("inf") else "n/a" for s in shares]
            cells = [f"[red]{c}[/red]" if s > 1 else c for c, s in zip(cells, shares)]
            fits = "yes" if all(s <= 1 for s in shares) else "no"
            util.add_row(model.name, card_name, f"{card.fclk_mhz * 1e6 / model.max_cycles():,.0f}", *cells, fits)
    console.print(util)
    if args.model:
        console.print(layer_table(models[0]))
    return 0


def layer_table(model) -> Table:
    table = Table(title=f"{model.name}: layers at the current folding")
    for column in ("#", "layer", "op", "shape", "folding", "variant", "cycles", "LUT", "BRAM18", "URAM", "DSP",
                   "out bits", "options"):
        table.add_column(column, justify="right" if column in ("#", "cycles", "LUT", "BRAM18", "URAM", "DSP",
                                                               "out bits", "options") else "left")
    for i, layer in enumerate(model.layers):
        opt = layer.current()
        describe = layer.describe() if hasattr(layer, "describe") else ""
        table.add_row(str(i), layer.name, layer.op, describe,
                      " ".join(f"{k}={v}" for k, v in opt.folding), " ".join(f"{v}" for _, v in opt.variant),
                      f"{opt.cycles:,}", f"{int(opt.res.lut):,}", str(int(opt.res.bram18)), str(int(opt.res.uram)),
                      str(int(opt.res.dsp)), str(opt.out_width), str(len(layer.options())))
    return table


# --- plan (the solver's command, imported lazily so `cards`/`zoo` do not load the solver) --------------------


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    from .plan_command import add_arguments

    add_arguments(parser)


def _plan_run(args: argparse.Namespace, console: Console) -> int:
    from .plan_command import run

    return run(args, console)


def _emulate_arguments(parser: argparse.ArgumentParser) -> None:
    from .emulate_command import add_arguments

    add_arguments(parser)


def _emulate_run(args: argparse.Namespace, console: Console) -> int:
    from .emulate_command import run

    return run(args, console)


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    from .build_command import add_arguments

    add_arguments(parser)


def _build_run(args: argparse.Namespace, console: Console) -> int:
    from .build_command import run

    return run(args, console)


COMMANDS: dict[str, tuple[AddArguments, Run]] = {
    "cards": (_cards_arguments, _cards_run),
    "zoo": (_zoo_arguments, _zoo_run),
    "plan": (_plan_arguments, _plan_run),
    "emulate": (_emulate_arguments, _emulate_run),
    "build": (_build_arguments, _build_run),
}
HELP = {
    "cards": "list the Alveo card catalog",
    "zoo": "list the built-in models: cycles, fps, resources and utilisation of each card; "
           "`zoo export MODEL -o FILE.onnx` writes one as a FINN dataflow ONNX with seeded weights",
    "plan": "fold, segment, place and replicate a model on a cluster",
    "emulate": "plan, run every instance as local segment processes behind a gateway, check every answer",
    "build": "card builds: `build bundle` (record -> FINN build bundle), `build run` (emulation builder), "
             "`build push` / `build pull` (OCI registry, verified)",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; given the command about to run, only that command's arguments are added (the others' modules
    import onnx, the builders and the emulator, a few hundred ms a `plan` does not need to pay)."""
    parser = argparse.ArgumentParser(prog="elasticdf", description="Elastic-DF partitioner for FINN accelerators "
                                     "on Alveo clusters")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, _run) in COMMANDS.items():
        subparser = sub.add_parser(name, help=HELP.get(name), description=HELP.get(name))
        if command in (None, name):
            add_arguments(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    # in a terminal rich fits the tables to it; piped output (logs, CI) gets room for full tables
    console = Console() if sys.stdout.isatty() else Console(width=240)
    try:
        return COMMANDS[args.command][1](args, console)
    except ElasticDFError as err:
        print(f"elasticdf {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
