"""`elasticdf build`: card builds from the command line (docs/builds.md).

- `elasticdf build bundle [--record build.json] [--model URI] [--sha256 HEX] -o DIR`: record + model -> bundle
  (the record from $ELASTICDF_BUILD_RECORD without --record);
- `elasticdf build run BUNDLE -o OUT`: the emulation builder, bundle -> artifact files;
- `elasticdf build push|pull`: the artifact to/from an OCI registry (build_oci_command).

Each action is (help, add_arguments, run) in SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from elasticdf_contract.builds import RECORD_ENV, BuildRecord
from rich.console import Console

from .build_oci_command import SUBCOMMANDS as OCI_SUBCOMMANDS
from .errors import InputError


def _bundle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--record", help=f"the build record (build.json, a BuildRecord); default: the JSON in "
                                         f"${RECORD_ENV} (how a builder Job gets it)")
    parser.add_argument("--model", help="zoo name or URI of the model (default: the record's model)")
    parser.add_argument("--sha256", help="digest the fetched model must have (required for http(s) URIs)")
    parser.add_argument("--catalog", help="extra card types YAML")
    parser.add_argument("-o", "--output", required=True, help="the bundle directory to write")


def _bundle_run(args: argparse.Namespace, console: Console) -> int:
    from .builds import identity_reference, read_document
    from .bundle import write_bundle
    from .catalog import load_catalog

    record = read_document(BuildRecord, Path(args.record)) if args.record else _record_from_env()
    files = write_bundle(record, args.model or identity_reference(record.model), args.output, args.sha256,
                         load_catalog(args.catalog))
    console.print(f"wrote bundle of build {record.digest} ({record.card_type}, {len(record.segments)} segment(s)) "
                  f"to {args.output}: {len(files)} files")
    return 0


def _record_from_env() -> BuildRecord:
    from pydantic import ValidationError

    text = os.environ.get(RECORD_ENV)
    if not text:
        raise InputError("--record", f"give the build record file, or its JSON in ${RECORD_ENV}")
    try:
        return BuildRecord.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"${RECORD_ENV}: {'.'.join(map(str, first['loc']))}", first["msg"]) from None


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="the bundle directory (elasticdf build bundle / plan --build-out)")
    parser.add_argument("-o", "--output", required=True, help="the artifact directory to write")
    parser.add_argument("--model", help="a local copy of the bundle's model (default: the bundle's reference)")


def _run_run(args: argparse.Namespace, console: Console) -> int:
    from .emulation_build import run_emulation_build

    report = run_emulation_build(args.bundle, args.output, args.model)
    console.print(f"built {report.digest} (emulation) in {report.seconds:.1f} s: {', '.join(report.files)}; "
                  f"clock {report.clock_mhz:g} MHz ({report.clock_source}), "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in report.resources.items()))
    return 0


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                             Callable[[argparse.Namespace, Console], int]]] = {
    "bundle": ("write the build bundle (FINN dataflow ONNX, folding, floorplan, DataflowBuildConfig, VNx layout) "
               "of a build record", _bundle_arguments, _bundle_run),
    "run": ("emulation builder: build a bundle into runnable segment ONNX files and a build report",
            _run_arguments, _run_run),
    **OCI_SUBCOMMANDS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (text, add, _run) in SUBCOMMANDS.items():
        add(actions.add_parser(name, help=text, description=text))


def run(args: argparse.Namespace, console: Console) -> int:
    if args.action not in SUBCOMMANDS:
        raise InputError("build", f"unknown action {args.action!r}", sorted(SUBCOMMANDS))
    return SUBCOMMANDS[args.action][2](args, console)
