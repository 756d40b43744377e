"""`python -m elasticdf_segment --wiring FILE` (or env ELASTICDF_WIRING): run one segment until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from elasticdf_partitioner.wiring import SegmentWiring

from .backends import BackendError, EmulationBackend, XrtBackend, choose
from .observe import SegmentMetrics, card_from_env, serve_health
from .stream import StreamNode

HEALTH_PORT = 8080  # the operator's readinessProbe port (builders.HEALTH_PORT)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="elasticdf-segment", description=__doc__)
    p.add_argument("--wiring", default=os.environ.get("ELASTICDF_WIRING"), help="SegmentWiring JSON file")
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


def log_card(wiring: SegmentWiring, card: dict[str, str]) -> None:
    """Say which card this segment was given: the device plugin's allocation, next to the planned card."""
    log = logging.getLogger("elasticdf.segment")
    if card:
        log.info("%s segment %d: card index=%s bdf=%s type=%s (planned %s/%d, %s)", wiring.instance_id,
                 wiring.segment, card.get("index", "?"), card.get("bdf", "?"), card.get("type", "?"),
                 wiring.node, wiring.card, wiring.card_type)
    else:
        log.info("%s segment %d: no card from a device plugin (ELASTICDF_CARD_INDEX unset); planned %s/%d, %s",
                 wiring.instance_id, wiring.segment, wiring.node, wiring.card, wiring.card_type)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    if not args.wiring:
        print("elasticdf-segment: no wiring (--wiring FILE or env ELASTICDF_WIRING)", file=sys.stderr)
        return 2
    with open(args.wiring) as fh:
        wiring = SegmentWiring.model_validate_json(fh.read())
    card = card_from_env(os.environ)
    log_card(wiring, card)
    metrics = SegmentMetrics(wiring.instance_id, wiring.segment, card)
    started = threading.Event()
    try:
        mode = choose(args.mode or wiring.mode)
        if mode == "emulation":
            backend = EmulationBackend(wiring, args.onnx, args.threads)
            node = StreamNode(wiring, backend.process, metrics, args.queue_depth, bind=args.bind)
        else:  # middle segments are pure VNx; the first (and a one-card last) relay TCP frames to the card
            backend = XrtBackend(wiring, onnx_path=args.onnx)
            node = (StreamNode(wiring, backend.process, metrics, args.queue_depth, bind=args.bind,
                               send=backend.returns_tcp)
                    if backend.relays_tcp else None)

        def ready() -> tuple[bool, str]:
            ok, why = backend.ready()
            if ok and node is not None and not node.connected:
                return False, f"downstream {wiring.downstream.host or wiring.downstream.ip} not connected"
            return ok, why

        serve_health(args.health_port, started.is_set, ready, metrics.registry, host=args.bind)
        backend.start()
        if node:
            node.start()
    except (BackendError, ValueError, OSError) as exc:
        print(f"elasticdf-segment: {exc}", file=sys.stderr)
        return 1
    started.set()
    logging.getLogger("elasticdf.segment").info("%s segment %d/%d running in %s mode", wiring.instance_id,
                                                wiring.segment, wiring.segments, mode)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
