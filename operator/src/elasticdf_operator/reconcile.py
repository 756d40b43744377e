"""Level-triggered, idempotent reconcile of one ElasticInference: decide -> act -> status (kopf only calls it).

`decide.decide` turns (spec, snapshot, now) into typed actions, `act.execute` applies them through `kube.Kube`,
`status.build_status` reports the snapshot after them. Card reservations live in the API server (group
ConfigMaps, card pods), so a reconcile is correct after restarts; the `state.Ledger` serialises
read-decide-write (and the status written from it) across resources and overlays this process's own writes the
watches have not delivered yet, so two reconciles never book the same card nor write their statuses out of order.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from elasticdf_partitioner.catalog import Catalog, load_catalog
from pydantic import ValidationError

from . import builders, metrics, modelfetch
from .act import execute, gateways_serving
from .api import ElasticInferenceSpec
from .builders import Owner
from .buildjobs import BuildIndex, BuildSettings
from .decide import Decision, Settings, decide, desired_replicas
from .modelfetch import ModelStore
from .state import LEDGER, Ledger, Observed
from .status import build_status


def in_cluster() -> bool:
    """Whether this process runs in a pod: only then can it reach pod IPs (a local operator, as in the e2e
    tests and the quickstart, cannot, and must not try)."""
    return "KUBERNETES_SERVICE_HOST" in os.environ


SETTINGS = Settings(not_ready_grace_seconds=float(os.environ.get("ELASTICDF_NOTREADY_GRACE_SECONDS", "30")),
                    gateway_drain_seconds=float(os.environ.get("ELASTICDF_GATEWAY_DRAIN_SECONDS", "5")),
                    ask_gateways=in_cluster() and os.environ.get("ELASTICDF_SCRAPE", "1") != "0",
                    builds=BuildSettings.from_env())
BUILDS = BuildIndex()


def owner_of(ei: dict) -> Owner:
    meta = ei["metadata"]
    return Owner(meta["name"], meta["namespace"], meta["uid"])


def reconcile(kube, ei: dict, observe: Callable[[], Observed] | None = None, ledger: Ledger = LEDGER,
              catalog: Catalog | None = None, settings: Settings = SETTINGS, models: ModelStore | None = None,
              builds: BuildIndex = BUILDS) -> dict:
    """Bring the card pods and gateway of `ei` in line with its spec; write and return its status.

    `models` resolves spec.model: zoo names, and artifacts fetched in the background (default: the process's
    store, configured by the chart's modelFetch values); card pods fetch with the same policy."""
    catalog = catalog or load_catalog()
    models = models or modelfetch.store()
    settings = dataclasses.replace(settings, pod_fetch=builders.PodFetch.of(models.policy, modelfetch.pull_secret()))
    observe = observe or kube.observe
    owner = owner_of(ei)
    decision = Decision()
    try:
        spec = ElasticInferenceSpec.model_validate(ei.get("spec") or {})
    except ValidationError as err:
        decision.conditions["PartitionSolved"] = ("False", "InvalidSpec", str(err).replace("\n", " ")[:900])
        spec, want = None, 0
    # asked outside the lock (a slow gateway holds up only its own resource's pass)
    serving = gateways_serving(kube, owner) if settings.ask_gateways else None
    with ledger.lock:
        raw = observe()
        raw.builds = builds.observe(kube, settings.builds, needed_builds(ledger.view(raw), owner), models.policy)
        raw.serving = serving
        if spec is not None:
            want = desired_replicas(spec)
            decision = decide(owner, spec, ledger.view(raw), time.time(), catalog, models.graph, settings)
            builds.want(decision.lookups)
        events = execute(kube, ledger, owner, decision.actions)
        snap = ledger.view(raw)
        cms, pods = snap.owned(owner.namespace, owner.name)
        status = build_status(ei, owner, want, cms, pods, decision, (ei.get("spec") or {}).get("model") or {},
                              snap.builds, settings.builds, snap.serving)
        body = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        post_events(kube, ei, events, body)  # before the status: a failed write still reports what was done
        # written in the order the passes observed: kopf runs a resource's timer and its change handlers side by
        # side, and a pass that observed first but wrote last would put a stale status back (a CI run saw 0 of 1
        # instances ready for seconds right after the status said the instance served)
        kube.patch_status(owner.namespace, owner.name, body)
        metrics.publish(owner.namespace, owner.name, body)
    if decision.solve_seconds is not None:
        metrics.PLAN_SECONDS.observe(decision.solve_seconds)
    return body


def needed_builds(snap: Observed, owner: Owner) -> set[str]:
    """The card builds of the resource's groups: the ones the observe step looks up in the registry."""
    cms, _ = snap.owned(owner.namespace, owner.name)
    return {digest for cm in cms for digest in builders.record_of(cm).get("builds", {})}


def post_events(kube, ei: dict, events: list, status: dict) -> None:
    """The decision's events (a Warning whose reason a condition already carries is not repeated), a Normal
    `Ready` when the resource becomes ready, and BuildSucceeded / BuildFailed when a build's phase turns so."""
    known = {c.get("reason") for c in (ei.get("status") or {}).get("conditions") or []}
    for e in events:
        if not (e.type == "Warning" and e.reason in known):
            kube.event(ei, e.type, e.reason, e.message)
    before = {c["type"]: c for c in (ei.get("status") or {}).get("conditions") or []}
    for c in status["conditions"]:
        old = before.get(c["type"])
        if c["type"] == "Ready" and c["status"] == "True" and (old is None or old["status"] != "True"):
            kube.event(ei, "Normal", "Ready", c["message"])
    phases = {b["digest"]: b.get("phase") for b in (ei.get("status") or {}).get("builds") or []}
    for b in status.get("builds") or []:
        was = phases.get(b["digest"])
        if b.get("phase") == "Ready" and was in ("Pending", "Building"):
            kube.event(ei, "Normal", "BuildSucceeded", f"card build {b['digest']}: {b.get('artifact')}")
        elif b.get("phase") == "Failed" and was != "Failed":
            kube.event(ei, "Warning", "BuildFailed", f"card build {b['digest']}: {b.get('message')}")
