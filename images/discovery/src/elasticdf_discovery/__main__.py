"""`python -m elasticdf_discovery [--node NAME] [--once]`: label this node with its Alveo cards, then re-check
every --interval seconds (cards come and go with driver reloads and shell flashes)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from .cards import discover
from .labels import node_patch

log = logging.getLogger("elasticdf.discovery")


def patch_node(name: str, patch: dict) -> None:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    client.CoreV1Api().patch_node(name, patch)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="elasticdf-discovery", description=__doc__)
    p.add_argument("--node", default=os.environ.get("NODE_NAME"), help="this Node (downward API spec.nodeName)")
    p.add_argument("--sysfs", default="/sys/bus/pci/devices")
    p.add_argument("--interval", type=float, default=60.0)
    p.add_argument("--once", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the patch instead of sending it")
    args = p.parse_args(argv)
    if not args.node and not args.dry_run:
        print("elasticdf-discovery: --node or env NODE_NAME is required", file=sys.stderr)
        return 2
    last = None
    while True:
        cards, xrt = discover(args.sysfs)
        patch = node_patch(cards, xrt)
        if args.dry_run:
            print(json.dumps(patch, indent=2))
        elif patch != last:
            patch_node(args.node, patch)
            log.info("node %s: %d cards (%s)", args.node, len(cards), ", ".join(c.type for c in cards) or "none")
            last = patch
        if args.once or args.dry_run:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
