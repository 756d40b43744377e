"""Metrics (DESIGN §5.6) and the HTTP endpoint the kubelet probes: /healthz, /readyz, /metrics."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LABELS = ("instance", "segment")
# what the (simulated or AMD) device plugin hands the container for its card
CARD_ENV = {"index": "ELASTICDF_CARD_INDEX", "bdf": "ELASTICDF_CARD_BDF", "type": "ELASTICDF_CARD_TYPE"}
# segment compute ranges from ~50 us (tiny emulated layers) to seconds (big models on a CPU)
LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5)


class RateWindow:
    """Events per second over the last `seconds` (what the fps gauge shows; a counter's rate needs PromQL)."""

    def __init__(self, seconds: float = 5.0):
        self.seconds = seconds
        self.times: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()

    def tick(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.times.append(now)
            return self._rate(now)

    def rate(self, now: float | None = None) -> float:
        with self.lock:
            return self._rate(time.monotonic() if now is None else now)

    def _rate(self, now: float) -> float:
        while self.times and self.times[0] < now - self.seconds:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(now - self.times[0], 1e-9)


def card_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The card the device plugin allocated to this container ({} when no plugin handed one)."""
    return {key: environ[var] for key, var in CARD_ENV.items() if environ.get(var)}


class SegmentFamilies:
    """The metric families of one process; a card pod hosting several segments labels them per segment."""

    def __init__(self, registry: CollectorRegistry | None = None, card: Mapping[str, str] | None = None):
        self.registry = registry or CollectorRegistry()
        card = card or {}
        Gauge("elasticdf_segment_card_info", "The card the device plugin allocated to this card pod (value 1)",
              ["card_index", "card_bdf", "card_type"], registry=self.registry).labels(
            card_index=card.get("index", ""), card_bdf=card.get("bdf", ""), card_type=card.get("type", "")).set(1)
        self.frames = Counter("elasticdf_segment_frames", "Frames processed by this segment", LABELS,
                              registry=self.registry)
        self.errors = Counter("elasticdf_segment_errors", "Frames this segment failed (error frames sent)",
                              LABELS, registry=self.registry)
        self.fps = Gauge("elasticdf_segment_fps", "Frames per second over the last 5 s", LABELS,
                         registry=self.registry)
        self.latency = Histogram("elasticdf_segment_latency_seconds", "Compute time per frame in this segment",
                                 LABELS, buckets=LATENCY_BUCKETS, registry=self.registry)


class SegmentMetrics:
    def __init__(self, instance: str, segment: int, registry: CollectorRegistry | None = None,
                 families: SegmentFamilies | None = None):
        families = families or SegmentFamilies(registry)
        self.registry = families.registry
        labels = {"instance": instance, "segment": str(segment)}
        self.frames = families.frames.labels(**labels)
        self.errors = families.errors.labels(**labels)
        self.fps = families.fps.labels(**labels)
        self.latency = families.latency.labels(**labels)
        self.window = RateWindow()
        self.fps.set_function(self.window.rate)

    def observe(self, seconds: float) -> None:
        self.frames.inc()
        self.latency.observe(seconds)
        self.window.tick()


def serve_health(port: int, alive: Callable[[], bool], ready: Callable[[], tuple[bool, str]],
                 registry: CollectorRegistry, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the probe/metrics server in a daemon thread. /healthz answers "ok <boot id>": the gateway fails
    a segment's in-flight requests when the boot id changes, even if a restart was quicker than its polling."""
    boot_id = uuid.uuid4().hex[:12]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = alive()
                self._reply(200 if ok else 503, f"ok {boot_id}\n".encode() if ok else b"not started\n")
            elif self.path == "/readyz":
                ok, why = ready()
                self._reply(200 if ok else 503, (why or "ready").encode() + b"\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds would flood the pod log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
