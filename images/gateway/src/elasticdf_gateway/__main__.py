"""`python -m elasticdf_gateway --model NAME --wiring DIR_OR_FILE...`: serve the Open Inference Protocol (KServe
v2 REST with binary tensors on --port, gRPC on --grpc-port) for the instances whose SegmentWiring files it is
given (the operator's gateway wiring ConfigMap, mounted). Run several replicas: each one dials every instance.

The wiring is re-read when its content changes (polled every --reload-seconds): the kubelet updates a mounted
ConfigMap in place when the operator adds or removes instances, so the gateway follows without a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import uvloop
from elasticdf_contract.wiring import SegmentWiring

from .pipeline import Pipeline
from .server import Gateway
from .service import Service, model_from

GATEWAY_PORT = 8000  # builders.GATEWAY_PORT
GRPC_PORT = 8001  # builders.GATEWAY_GRPC_PORT (the protocol's convention)


log = logging.getLogger("elasticdf.gateway")


def wiring_files(paths: list[str]) -> list[Path]:
    """`*segment-*.json` under the directories (the operator's `instance-<i>-segment-<s>.json`, a chart's
    `instance-<i>/segment-<s>.json`), and the files given. Skips the kubelet's `..data`/`..<timestamp>`
    directories of a mounted ConfigMap, which hold the same files again."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        files += sorted(f for f in path.rglob("*segment-*.json")
                        if not any(part.startswith("..") for part in f.relative_to(path).parts))
    return files


def load_wirings(paths: list[str]) -> list[SegmentWiring]:
    return [SegmentWiring.model_validate_json(f.read_text()) for f in wiring_files(paths)]


def digest(paths: list[str]) -> str:
    """Hash of the wiring files' names and contents (what a reload would read)."""
    h = hashlib.sha256()
    for f in wiring_files(paths):
        try:
            h.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:  # removed while we looked: the next poll sees the new state
            h.update(str(f).encode() + b"\0missing\0")
    return h.hexdigest()


class WiringWatcher:
    """Polls the wiring every `interval` s and calls `on_change(wirings)` when the content hash changes.

    A change that does not parse (a half-written file outside a ConfigMap mount) keeps the old wiring and
    is retried on the next poll."""

    def __init__(self, paths: list[str], on_change: Callable[[list[SegmentWiring]], None], interval: float = 0.2):
        self.paths, self.on_change, self.interval = paths, on_change, interval
        self.seen = digest(paths)

    def poll(self) -> bool:
        now = digest(self.paths)
        if now == self.seen:
            return False
        try:
            wirings = load_wirings(self.paths)
        except (OSError, ValueError) as exc:
            log.warning("wiring changed but does not load (keeping the previous one): %s", exc)
            return False
        self.on_change(wirings)
        self.seen = now
        return True

    async def run(self) -> None:
        """Poll on the gateway's event loop: `on_change` swaps the wiring between two requests' steps."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.poll()
            except Exception:  # noqa: BLE001 (never let the watcher die)
                log.exception("wiring reload failed")


def reload(service: Service, wirings: list[SegmentWiring]) -> None:
    added, removed = service.pipeline.update(wirings)
    if not service.model.inputs and wirings:  # started with no instances (scaled to zero)
        service.model = model_from(service.model.name, wirings, service.pipeline.max_batch > 1)
    log.info("wiring reloaded: %d instance(s); added %s, removed %s", len(service.pipeline.instances),
             added or "none", removed or "none")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="elasticdf-gateway", description=__doc__)
    p.add_argument("--model", default=os.environ.get("ELASTICDF_MODEL"), help="model name in /v2/models/{name}")
    p.add_argument("--wiring", nargs="+", default=(os.environ.get("ELASTICDF_WIRING_DIR") or "").split() or None,
                   help="SegmentWiring JSON files or directories of segment-*.json")
    p.add_argument("--port", type=int, default=GATEWAY_PORT, help="REST (Open Inference Protocol v2)")
    p.add_argument("--grpc-port", type=int, default=GRPC_PORT, help="gRPC (inference.GRPCInferenceService)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--segment-health-port", type=int, default=8080)
    p.add_argument("--health-failures", type=int, default=3,
                   help="failed segment health checks in a row (2 s timeout, 0.5 s apart) before an instance "
                        "leaves the rotation (a broken connection takes it out at once; a timeout while the "
                        "instance's results keep arriving is no failure)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request fails with 504")
    p.add_argument("--max-batch", type=int, default=32,
                   help="frames per batch towards an instance (xrt instances: always 1, the card takes frames)")
    p.add_argument("--max-batch-delay-ms", type=float, default=0.0,
                   help="wait this long for a batch to fill when an instance is free (0: send what is queued)")
    p.add_argument("--max-queue", type=int, default=512, help="frames waiting for an instance before 429")
    p.add_argument("--window", type=int, default=4, help="batches in flight per instance")
    p.add_argument("--max-body-bytes", type=int, default=64 << 20, help="largest request (413 / RESOURCE_EXHAUSTED)")
    p.add_argument("--drain-seconds", type=float, default=30.0, help="on SIGTERM, wait this long for in-flight work")
    # activating a standby instance should reach the rotation within a second of `kubectl scale`; a poll
    # hashes a few small files, so polling five times a second costs nothing that shows
    p.add_argument("--reload-seconds", type=float, default=0.2,
                   help="poll the wiring for changes this often (0: read it once at start)")
    return p.parse_args(argv)


def build(args: argparse.Namespace, wirings: list[SegmentWiring]) -> Gateway:
    model = args.model or (wirings[0].model if wirings else "model")
    max_batch = 1 if any(w.mode == "xrt" for w in wirings) else args.max_batch
    pipeline = Pipeline(wirings, health_port=args.segment_health_port, timeout=args.timeout, max_batch=max_batch,
                        max_delay=args.max_batch_delay_ms / 1000, max_queue=args.max_queue, window=args.window,
                        name=socket.gethostname(), health_failures=args.health_failures)
    return Gateway(Service(model_from(model, wirings, max_batch > 1), pipeline), args.max_body_bytes,
                   args.drain_seconds)


async def serve(args: argparse.Namespace) -> None:
    gateway = build(args, load_wirings(args.wiring))
    await gateway.start(args.host, args.port, args.grpc_port)
    watcher = None
    if args.reload_seconds > 0:
        watcher = asyncio.create_task(WiringWatcher(args.wiring, lambda ws: reload(gateway.service, ws),
                                                    args.reload_seconds).run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if watcher:
        watcher.cancel()
    await gateway.stop()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    if not args.wiring:
        print("elasticdf-gateway: no wiring (--wiring or env ELASTICDF_WIRING_DIR)", file=sys.stderr)
        return 2
    try:
        uvloop.run(serve(args))  # libuv's loop: socket writes and callbacks in C, the gateway's hot path
    except OSError as exc:  # a port in use, an unreadable wiring
        print(f"elasticdf-gateway: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
