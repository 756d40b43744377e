"""What a reconcile sees of the cluster, without listing it per event (plain data, no kopf).

The kopf handlers keep three indexes (Alveo nodes, managed pods, instance ConfigMaps) fed by watches; a
reconcile gets a snapshot of them as an `Observed`. Index entries are *projections*: only the fields the
operator reads, so 1000 nodes cost little memory.

A watch lags behind our own writes by a few milliseconds to seconds. The `Ledger` closes that gap: it
remembers what this process created or deleted until the index shows it, and overlays that on every
snapshot, so two reconciles never hand out the same card and never place the same instance twice. It
holds nothing the API server does not also hold: after a restart the indexes alone are the truth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from elasticdf_contract.names import LABEL_GROUP, LABEL_NAME, label_value

from .buildjobs import BuildsSeen

FRESH_SECONDS = 60.0  # forget an overlay entry the index never confirmed after this long
REAPPLY_SECONDS = 60.0  # re-apply unchanged gateway objects this often (repairs edits and deletions by others)


def _meta(body, keys: Iterable[str]) -> dict:
    meta = body.get("metadata") or {}
    out = {k: meta[k] for k in keys if meta.get(k) is not None}
    for k in ("labels", "annotations"):
        out[k] = dict(meta.get(k) or {})
    return out


def project_node(body) -> dict:
    status = body.get("status") or {}
    conditions = [{"type": c.get("type"), "status": c.get("status"), "lastTransitionTime": c.get("lastTransitionTime")}
                  for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return {"metadata": _meta(body, ("name", "uid")),
            "spec": {"unschedulable": bool((body.get("spec") or {}).get("unschedulable"))},
            "status": {"allocatable": dict(status.get("allocatable") or {}), "conditions": conditions}}


def project_pod(body) -> dict:
    status = body.get("status") or {}
    return {"metadata": _meta(body, ("name", "namespace", "uid", "deletionTimestamp")),
            "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
            "status": {"phase": status.get("phase"), "podIP": status.get("podIP"),
                       "conditions": [{"type": c.get("type"), "status": c.get("status")}
                                      for c in status.get("conditions") or []]}}


def project_configmap(body) -> dict:
    return {"metadata": _meta(body, ("name", "namespace", "uid")), "data": dict(body.get("data") or {})}


def owner_key(obj: dict) -> tuple[str, str] | None:
    """(namespace, label value of the ElasticInference's name) of a managed object: the key of the pod and
    ConfigMap indexes (`names.label_value`: the name itself unless it is too long for a label)."""
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(LABEL_NAME)
    return (meta.get("namespace"), name) if name else None


@dataclass
class Observed:
    """A snapshot: Alveo nodes, managed pods, group ConfigMaps, Fabrics (plain camelCase dicts), what the
    observe step saw of card builds (registry, builder Jobs) and which instances the reconciled resource's
    gateways serve (act.gateways_serving; None: not asked, the card pods' readiness stands for it)."""

    nodes: list[dict]
    pods: list[dict]
    configmaps: list[dict]
    fabrics: list[dict] = field(default_factory=list)
    builds: BuildsSeen = field(default_factory=BuildsSeen)
    serving: set[str] | None = None

    def owned(self, namespace: str, name: str) -> tuple[list[dict], list[dict]]:
        """The group ConfigMaps and card pods of the ElasticInference `name`."""
        key = (namespace, label_value(name))
        return ([c for c in self.configmaps if owner_key(c) == key and LABEL_GROUP in c["metadata"]["labels"]],
                [p for p in self.pods if owner_key(p) == key])


def _key(obj: dict) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


class _Overlay:
    """Objects this process created or deleted that the index may not show yet."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.fresh: dict[tuple[str, str], tuple[dict, float]] = {}
        self.gone: dict[str, float] = {}  # uid -> when

    def created(self, obj: dict) -> None:
        self.fresh[_key(obj)] = (obj, self.clock())

    def deleted(self, uid: str | None) -> None:
        if uid:
            self.gone[uid] = self.clock()

    def apply(self, indexed: list[dict]) -> list[dict]:
        now = self.clock()
        uids = {o["metadata"].get("uid") for o in indexed}
        for key, (obj, when) in list(self.fresh.items()):
            if obj["metadata"].get("uid") in uids or now - when > FRESH_SECONDS:
                del self.fresh[key]  # the index caught up (or the object went away again)
        for uid, when in list(self.gone.items()):
            if uid not in uids or now - when > FRESH_SECONDS:
                del self.gone[uid]
        out = {_key(o): o for o in indexed if o["metadata"].get("uid") not in self.gone}
        for key, (obj, _) in self.fresh.items():
            out[key] = obj
        return list(out.values())


class Ledger:
    """Serialises read-decide-write of different resources and overlays this process's own recent writes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.lock = threading.RLock()
        self.configmaps = _Overlay(clock)
        self.pods = _Overlay(clock)
        self.clock = clock
        self.applied: dict[tuple[str, str, str], tuple[str, float]] = {}

    def needs_apply(self, obj: dict, digest: str) -> bool:
        """Whether `obj` (with content hash `digest`) differs from what this process last applied, or was
        applied long enough ago to be re-asserted. Only saves API calls: after a restart it applies once."""
        last = self.applied.get(_applied_key(obj))
        return last is None or last[0] != digest or self.clock() - last[1] > REAPPLY_SECONDS

    def mark_applied(self, obj: dict, digest: str) -> None:
        self.applied[_applied_key(obj)] = (digest, self.clock())

    def forget_applied(self, namespace: str, names: Iterable[str]) -> None:
        names = set(names)
        for key in [k for k in self.applied if k[1] == namespace and k[2] in names]:
            del self.applied[key]

    def view(self, observed: Observed) -> Observed:
        return Observed(observed.nodes, self.pods.apply(observed.pods), self.configmaps.apply(observed.configmaps),
                        observed.fabrics, observed.builds, observed.serving)

    def created(self, obj: dict) -> None:
        (self.pods if obj.get("kind") == "Pod" else self.configmaps).created(obj)

    def deleted(self, kind: str, uid: str | None) -> None:
        (self.pods if kind == "Pod" else self.configmaps).deleted(uid)


def _applied_key(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]


LEDGER = Ledger()
