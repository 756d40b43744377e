"""`python -m elasticdf_segment --wiring FILE` (or env ELASTICDF_WIRING): run a card's segments until SIGTERM.

FILE is a CardWiring (every segment the plan puts on the card, of one or several instances) or a single
SegmentWiring. One process runs them all, one StreamNode per segment on its own data port: a card has one
device handle, one bitstream and one VNx socket table (xrt), and the pod has one readiness and one /metrics
endpoint; onnxruntime releases the GIL while it computes, so emulated segments still run in parallel.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from elasticdf_contract.wiring import CardWiring, SegmentWiring, load_card

from .backends import BackendError, EmulationBackend, XrtBackend, XrtCard, choose
from .observe import SegmentFamilies, SegmentMetrics, card_from_env, serve_health
from .stream import StreamNode

HEALTH_PORT = 8080  # the operator's readinessProbe port (builders.HEALTH_PORT)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="elasticdf-segment", description=__doc__)
    p.add_argument("--wiring", default=os.environ.get("ELASTICDF_WIRING"),
                   help="CardWiring (or one SegmentWiring) JSON file")
    p.add_argument("--xclbin", default=os.environ.get("ELASTICDF_XCLBIN"),
                   help="URI of the card build's bitstream (xrt; the operator sets it from spec.model.artifacts)")
    p.add_argument("--mode", default=os.environ.get("ELASTICDF_MODE"), choices=["auto", "xrt", "emulation"],
                   help="default: the wiring's mode")
    p.add_argument("--onnx", default=os.environ.get("ELASTICDF_SEGMENT_ONNX"),
                   help="an already cut segment ONNX (default: cut the wiring's model by its layer range)")
    p.add_argument("--health-port", type=int, default=int(os.environ.get("ELASTICDF_HEALTH_PORT", HEALTH_PORT)))
    p.add_argument("--bind", default=os.environ.get("ELASTICDF_BIND", "0.0.0.0"),
                   help="address the data and health ports listen on (a pod: all; `elasticdf emulate`: its own "
                        "loopback address per segment)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("ELASTICDF_ORT_THREADS", "1")),
                   help="onnxruntime intra-op threads (default 1: one core per pipeline stage; 0: all cores)")
    p.add_argument("--queue-depth", type=int, default=8, help="results buffered before backpressure")
    return p.parse_args(argv)


class SegmentRunner:
    """One hosted segment: its backend and, where frames pass through this process, its StreamNode."""

    def __init__(self, wiring: SegmentWiring, position: int, xrt_card: XrtCard | None, args: argparse.Namespace,
                 families: SegmentFamilies):
        self.wiring = wiring
        metrics = SegmentMetrics(wiring.instance_id, wiring.segment, families=families)
        if xrt_card is None:
            self.backend = EmulationBackend(wiring, args.onnx, args.threads)
            self.node = StreamNode(wiring, self.backend.process, metrics, args.queue_depth, bind=args.bind)
        else:  # middle segments are pure VNx; the first (and a one-card last) relay TCP frames to the card
            self.backend = XrtBackend(wiring, xrt_card, position, onnx_path=args.onnx)
            self.node = (StreamNode(wiring, self.backend.process, metrics, args.queue_depth, bind=args.bind,
                                    send=self.backend.returns_tcp)
                         if self.backend.relays_tcp else None)

    def ready(self) -> tuple[bool, str]:
        ok, why = self.backend.ready()
        if ok and self.node is not None and not self.node.connected:
            w = self.wiring
            return False, f"{w.instance_id} segment {w.segment}: downstream {w.downstream.host or w.downstream.ip} " \
                          "not connected"
        return ok, why

    def start(self) -> None:
        self.backend.start()
        if self.node:
            self.node.start()


def read_card(args: argparse.Namespace) -> CardWiring:
    with open(args.wiring) as fh:
        card = load_card(fh.read())
    if args.xclbin:
        for w in card.segments:
            w.artifacts.xclbin = args.xclbin
    return card


def log_card(card: CardWiring, allocated: dict[str, str]) -> None:
    """Say which card this pod was given: the device plugin's allocation, next to the planned card."""
    log = logging.getLogger("elasticdf.segment")
    if allocated:
        log.info("card index=%s bdf=%s type=%s (planned %s/%d, %s)", allocated.get("index", "?"),
                 allocated.get("bdf", "?"), allocated.get("type", "?"), card.node, card.card, card.card_type)
    else:
        log.info("no card from a device plugin (ELASTICDF_CARD_INDEX unset); planned %s/%d, %s", card.node,
                 card.card, card.card_type)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    if not args.wiring:
        print("elasticdf-segment: no wiring (--wiring FILE or env ELASTICDF_WIRING)", file=sys.stderr)
        return 2
    card = read_card(args)
    allocated = card_from_env(os.environ)
    log_card(card, allocated)
    families = SegmentFamilies(card=allocated)
    started = threading.Event()
    try:
        mode = choose(args.mode or card.mode)
        xrt_card = XrtCard(card) if mode == "xrt" else None  # one flash and one socket table for every segment
        runners = [SegmentRunner(w, p, xrt_card, args, families) for p, w in enumerate(card.segments)]

        def ready() -> tuple[bool, str]:
            for runner in runners:
                ok, why = runner.ready()
                if not ok:
                    return ok, why
            return True, ""

        serve_health(args.health_port, started.is_set, ready, families.registry, host=args.bind)
        if xrt_card is not None:
            xrt_card.start()
        for runner in runners:
            runner.start()
    except (BackendError, ValueError, OSError) as exc:
        print(f"elasticdf-segment: {exc}", file=sys.stderr)
        return 1
    started.set()
    hosted = ", ".join(f"{w.instance_id}#{w.segment}/{w.segments}" for w in card.segments)
    logging.getLogger("elasticdf.segment").info("card %s/%d (%s) running %s in %s mode", card.node, card.card,
                                                card.card_type, hosted, mode)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
