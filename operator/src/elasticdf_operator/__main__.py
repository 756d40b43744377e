"""`python -m elasticdf_operator [--namespace NS ...] [--metrics-port N] [--leader-elect]`: run the kopf operator
standalone; with --leader-elect, only the replica holding the Lease runs it (`leader.py`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="elasticdf-operator", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only these (default: all)")
    parser.add_argument("--metrics-port", type=int, default=9090, help="Prometheus port (0: off)")
    parser.add_argument("--resync-seconds", type=float, default=5.0)
    parser.add_argument("--autoscale-seconds", type=float, default=5.0, help="autoscaler step interval")
    parser.add_argument("--leader-elect", action="store_true",
                        help="run only while holding a coordination.k8s.io Lease (several replicas)")
    parser.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"),
                        help="namespace of the Lease (default: $POD_NAMESPACE, else 'default')")
    parser.add_argument("--lease-name", default="elasticdf-operator")
    parser.add_argument("--lease-seconds", type=int, default=15,
                        help="how long a dead leader keeps the Lease before a follower takes over (>= 3)")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ["ELASTICDF_METRICS_PORT"] = str(args.metrics_port)
    os.environ["ELASTICDF_RESYNC_SECONDS"] = str(args.resync_seconds)
    os.environ["ELASTICDF_AUTOSCALE_SECONDS"] = str(args.autoscale_seconds)
    from kopf.cli import main as kopf_main

    kopf_args = ["run", "-m", "elasticdf_operator.handlers", "--standalone"]
    kopf_args += [f"--namespace={ns}" for ns in args.namespace] or ["--all-namespaces"]
    if args.verbose:
        kopf_args.append("--verbose")
    if not args.leader_elect:
        return kopf_main(kopf_args, standalone_mode=False) or 0
    from . import handlers, leader, metrics
    from .state import LEDGER

    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    try:
        leader.timings(args.lease_seconds)
    except ValueError as err:
        print(f"elasticdf-operator: {err}", file=sys.stderr)
        return 2
    metrics.serve(args.metrics_port)  # liveness and readiness probes of a follower read it too
    lease = leader.acquire(handlers.kube().core.api_client, args.lease_namespace, args.lease_name, args.lease_seconds)
    metrics.LEADER.set(1)
    code = kopf_main(kopf_args, standalone_mode=False) or 0
    # an in-flight reconcile finishes its writes first; none may start after the release: exit holding the lock
    with LEDGER.lock:
        lease.release()
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
