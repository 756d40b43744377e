"""The built-in autoscaler (spec.autoscaling): observed fps -> replicas, with stabilisation windows.

Three plain parts, kopf only calls them:
- metrics sources: where observed fps comes from. `AnnotationSource` reads the ElasticInference annotation
  `elasticdf.io/observed-fps` (total frames/s of the resource; set by an external metrics adapter, or by a
  test); `ScrapeSource` reads `/metrics` of the gateway pods (`elasticdf_gateway_fps`) or else of every
  instance's first segment pod (`elasticdf_segment_fps`). `FirstOf` chains them.
- `decide`: a pure function of (current replicas, observed fps, policy, recommendation history, now), the
  way the HPA stabilises: a scale-up goes to the *lowest* recommendation of the scale-up window (load must
  stay high for the whole window), a scale-down to the *highest* of the scale-down window.
- `autoscale`: one step for one resource: read, decide, patch spec.replicas through the scale subresource
  (the reconcile then adds or removes whole instances), write status.observedFPS, emit an Event.

The history (unix times: it outlives the process) is kept in memory per resource and saved in the
ConfigMap `<name>-autoscale` whenever it changes, so a restarted operator (or the next leader) continues the
windows where they were; consecutive equal recommendations are kept as one entry (the newest time), which
decides the same. A resource without a saved history starts one with the current replica count, so it waits
a full window before it moves in either direction.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from elasticdf_contract.names import ANNOTATION_OBSERVED_FPS, GATEWAY_PORT, HEALTH_PORT, LABEL_ROLE
from prometheus_client.parser import text_string_to_metric_families

from . import metrics
from .api import Autoscaling
from .builders import Owner, autoscale_configmap


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    target_fps: float  # per replica
    scale_up_window: float = 0.0
    scale_down_window: float = 300.0

    @classmethod
    def of(cls, a: Autoscaling) -> Policy:
        return cls(a.min_replicas, a.max_replicas, a.target_fps, a.scale_up_stabilization_seconds,
                   a.scale_down_stabilization_seconds)

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, n))


@dataclass
class History:
    """Recommendations (time, replicas) of one resource, oldest first."""

    entries: list[tuple[float, int]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps([[round(t, 3), r] for t, r in self.entries])

    @classmethod
    def from_json(cls, text: str) -> History:
        return cls([(float(t), int(r)) for t, r in json.loads(text)])


def recommend(observed_fps: float, policy: Policy) -> int:
    """Replicas that carry the observed load at the per-replica target (a 1% tolerance against flapping)."""
    return policy.clamp(math.ceil(max(observed_fps, 0.0) / policy.target_fps - 0.01))


def decide(current: int, observed_fps: float, policy: Policy, history: History, now: float) -> int:
    """The replica count to run now; appends this step's recommendation to `history` (and prunes it)."""
    if not history.entries:  # the window starts now: the current count counts as recommended until then
        history.entries.append((now - 1e-6, policy.clamp(current)))
    recommended = recommend(observed_fps, policy)
    if history.entries and history.entries[-1][1] == recommended:
        history.entries[-1] = (now, recommended)  # the newest time of a run is all the windows look at
    else:
        history.entries.append((now, recommended))
    keep = max(policy.scale_up_window, policy.scale_down_window)
    history.entries[:] = [(t, r) for t, r in history.entries if now - t <= keep]
    up = min(r for t, r in history.entries if now - t <= policy.scale_up_window)
    down = max(r for t, r in history.entries if now - t <= policy.scale_down_window)
    if current < policy.min_replicas or current > policy.max_replicas:
        return policy.clamp(current)
    if up > current:
        return up
    if down < current:
        return down
    return current


class Source(Protocol):
    def observed_fps(self, ei: dict, pods: list[dict]) -> float | None: ...


class AnnotationSource:
    """`metadata.annotations["elasticdf.io/observed-fps"]`: total observed frames/s of the resource."""

    def observed_fps(self, ei: dict, pods: list[dict]) -> float | None:
        raw = (ei["metadata"].get("annotations") or {}).get(ANNOTATION_OBSERVED_FPS)
        try:
            value = float(raw) if raw is not None else None
        except ValueError:
            return None
        return value if value is not None and math.isfinite(value) and value >= 0 else None


def metric_sum(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of the samples of gauge `name` (with these label values) in a Prometheus text exposition (None
    when absent)."""
    values = [s.value for fam in text_string_to_metric_families(text) if fam.name == name for s in fam.samples
              if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items())]
    return sum(values) if values else None


def http_get(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (pod IPs, http only)
        return response.read().decode()


class ScrapeSource:
    """Scrape `/metrics` of Running pods: gateway pods if there are any, else the card pods' first segments."""

    def __init__(self, get: Callable[[str, float], str] = http_get, timeout: float = 0.5):
        self.get = get
        self.timeout = timeout

    def _targets(self, pods: Iterable[dict]) -> list[tuple[str, str, dict]]:
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")]
        gateways = [p for p in running if p["metadata"]["labels"].get(LABEL_ROLE) == "gateway"]
        if gateways:
            return [(f"http://{p['status']['podIP']}:{GATEWAY_PORT}/metrics", "elasticdf_gateway_fps", {})
                    for p in gateways]
        return [(f"http://{p['status']['podIP']}:{HEALTH_PORT}/metrics", "elasticdf_segment_fps", {"segment": "0"})
                for p in running if p["metadata"]["labels"].get(LABEL_ROLE) == "card"]

    def observed_fps(self, ei: dict, pods: list[dict]) -> float | None:
        total, seen = 0.0, False
        for url, name, labels in self._targets(pods):
            try:
                value = metric_sum(self.get(url, self.timeout), name, labels)
            except (OSError, ValueError):
                continue
            if value is not None:
                total, seen = total + value, True
        return total if seen else None


class FirstOf:
    def __init__(self, *sources: Source):
        self.sources = sources

    def observed_fps(self, ei: dict, pods: list[dict]) -> float | None:
        for source in self.sources:
            value = source.observed_fps(ei, pods)
            if value is not None:
                return value
        return None


@dataclass
class Step:
    observed_fps: float | None
    current: int
    replicas: int


def autoscale(kube, ei: dict, pods: list[dict], source: Source, histories: dict[str, History],
              now: float | None = None) -> Step | None:
    """One autoscaler step for `ei` (no-op without spec.autoscaling or without an fps reading)."""
    spec = ei.get("spec") or {}
    if not spec.get("autoscaling"):
        return None
    meta = ei["metadata"]
    policy = Policy.of(Autoscaling.model_validate(spec["autoscaling"]))
    current = int(spec.get("replicas", 1))
    observed = source.observed_fps(ei, pods)
    if observed is None:
        return Step(None, current, current)
    history = histories.get(meta["uid"])
    if history is None:  # first step of this process: continue the saved windows
        saved = kube.autoscale_history(meta["namespace"], meta["name"])
        history = histories[meta["uid"]] = History.from_json(saved) if saved else History()
    before = list(history.entries)
    replicas = decide(current, observed, policy, history, time.time() if now is None else now)
    if history.entries != before:
        kube.apply(autoscale_configmap(Owner(meta["name"], meta["namespace"], meta["uid"]), history.to_json()))
    if replicas != current:
        kube.scale(meta["namespace"], meta["name"], replicas)
        kube.event(ei, "Normal", "Scaled", f"replicas {current} -> {replicas}: observed {observed:.0f} fps, "
                   f"target {policy.target_fps:.0f} fps per replica")
    if (ei.get("status") or {}).get("observedFPS") != round(observed, 3):
        kube.patch_status(meta["namespace"], meta["name"], {"observedFPS": round(observed, 3)})
    metrics.OBSERVED_FPS.labels(meta["namespace"], meta["name"]).set(observed)
    return Step(observed, current, replicas)
