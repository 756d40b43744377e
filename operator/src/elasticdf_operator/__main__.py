"""`python -m elasticdf_operator [--namespace NS ...] [--metrics-port N]`: run the kopf operator standalone."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elasticdf-operator", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only these (default: all)")
    parser.add_argument("--metrics-port", type=int, default=9090, help="Prometheus port (0: off)")
    parser.add_argument("--resync-seconds", type=float, default=5.0)
    parser.add_argument("--autoscale-seconds", type=float, default=5.0, help="autoscaler step interval")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    os.environ["ELASTICDF_METRICS_PORT"] = str(args.metrics_port)
    os.environ["ELASTICDF_RESYNC_SECONDS"] = str(args.resync_seconds)
    os.environ["ELASTICDF_AUTOSCALE_SECONDS"] = str(args.autoscale_seconds)
    from kopf.cli import main as kopf_main

    kopf_args = ["run", "-m", "elasticdf_operator.handlers", "--standalone"]
    kopf_args += [f"--namespace={ns}" for ns in args.namespace] or ["--all-namespaces"]
    if args.verbose:
        kopf_args.append("--verbose")
    return kopf_main(kopf_args, standalone_mode=False) or 0


if __name__ == "__main__":
    sys.exit(main())
