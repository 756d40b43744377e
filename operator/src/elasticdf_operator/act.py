"""act: apply a Decision's actions through the one typed Kubernetes interface (`kube.Kube`), in order, and
record them in the Ledger so the next snapshot shows them before the watches do.

A changed gateway wiring ConfigMap is followed by an annotation of the gateway pods with its digest: the
kubelet refreshes a mounted ConfigMap when it syncs the pod, and an update of the pod makes it sync now
instead of at its periodic resync (up to about a minute), so an activated standby instance joins the
rotation within about a second.

A group release that waits for the gateways (`DeleteGroup.unless_served`) first asks every gateway pod which
instances it still holds (its /metrics, `elasticdf_gateway_instance_held`): while one still serves or drains
an instance of the group, its card pods stay and the release is retried on a later pass."""

from __future__ import annotations

import hashlib
import json
import logging

from elasticdf_contract.names import GATEWAY_PORT, LABEL_ROLE
from prometheus_client.parser import text_string_to_metric_families

from .autoscale import http_get
from .builders import Owner
from .decide import (
    Action,
    Apply,
    Create,
    CreateBuildJob,
    DeleteGroup,
    DeletePod,
    Emit,
    MarkIdle,
    UpdateWiring,
    pod_ready,
)
from .state import Ledger

log = logging.getLogger("elasticdf.act")


def execute(kube, ledger: Ledger, owner: Owner, actions: list[Action]) -> list[Emit]:
    """Apply everything but events (returned: the status step decides which to post)."""
    events = []
    for action in actions:
        match action:
            case Create(obj):
                created = kube.create(obj)
                if created is not None and obj["kind"] in ("Pod", "ConfigMap"):
                    ledger.created(created)
            case DeletePod(name, uid):
                if kube.delete_pod(owner.namespace, name, uid):
                    ledger.deleted("Pod", uid)
            case DeleteGroup(index, cm_uid, pod_uids, unless_served):
                if unless_served and (held := gateways_holding(kube, owner, set(unless_served))):
                    log.info("%s/%s group %d: card pods kept until the gateways let go (%s)", owner.namespace,
                             owner.name, index, "; ".join(held))
                    continue
                kube.delete_group(owner.namespace, owner.name, index)
                ledger.deleted("ConfigMap", cm_uid)
                for uid in pod_uids:
                    ledger.deleted("Pod", uid)
            case MarkIdle(name, since):
                patched = kube.annotate_idle(owner.namespace, name, since)
                if patched is not None:
                    ledger.created(patched)
            case Apply(obj):
                digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
                if ledger.needs_apply(obj, digest):
                    kube.apply(obj)
                    ledger.mark_applied(obj, digest)
                    if obj["kind"] == "ConfigMap" and obj["metadata"]["labels"].get(LABEL_ROLE) == "gateway":
                        kube.annotate_gateway_pods(owner.namespace, owner.name, digest[:16])
            case CreateBuildJob(obj, event):
                if kube.create(obj) is not None:  # another resource may have made this build's Job first
                    events.append(event)
            case UpdateWiring(name, data):
                patched = kube.patch_configmap_data(owner.namespace, name, data)
                if patched is not None:
                    ledger.created(patched)
            case Emit():
                events.append(action)
    return events


HELD_METRIC = "elasticdf_gateway_instance_held"


def gateways_holding(kube, owner: Owner, instance_ids: set[str], get=http_get, timeout: float = 0.5) -> list[str]:
    """Which gateway pods still hold (serve or drain) one of `instance_ids`, or could not be asked: one line
    each; empty when none does. Pods not running serve nothing."""
    held = []
    for name, text in _gateway_metrics(kube, owner, get, timeout):
        if isinstance(text, Exception):
            held.append(f"{name}: not answering ({text})")
            continue
        mine = sorted(instance_ids & set(held_instances(text)))
        if mine:
            held.append(f"{name} holds {', '.join(mine)}")
    return held


def gateways_serving(kube, owner: Owner, get=http_get, timeout: float = 0.5) -> set[str] | None:
    """The instances every Ready gateway pod (the ones its Service sends requests to) has in its rotation
    (empty: none is Ready); None when one could not be asked (no view this pass). A card pod is Ready before
    the gateways reach its segments: they check them by name, and a check made before the pod existed is
    answered from DNS's negative cache for a few seconds."""
    serving = None
    for _, text in _gateway_metrics(kube, owner, get, timeout, ready_only=True):
        if isinstance(text, Exception):
            return None
        mine = {i for i, state in held_instances(text).items() if state == "serving"}
        serving = mine if serving is None else serving & mine
    return serving or set()


def _gateway_metrics(kube, owner: Owner, get, timeout: float, ready_only: bool = False):
    """(name, /metrics text or the error asking it) of each running (or Ready) gateway pod of the resource."""
    for pod in kube.gateway_pods(owner.namespace, owner.name):
        ip, name = pod.get("status", {}).get("podIP"), pod["metadata"]["name"]
        if pod.get("status", {}).get("phase") != "Running" or not ip or pod["metadata"].get("deletionTimestamp"):
            continue
        if ready_only and not pod_ready(pod):
            continue
        try:
            yield name, get(f"http://{ip}:{GATEWAY_PORT}/metrics", timeout)
        except (OSError, ValueError) as exc:
            yield name, exc


def held_instances(text: str) -> dict[str, str]:
    """The instance ids a gateway's /metrics reports as held, and the state each is in (serving, down,
    draining)."""
    return {s.labels["instance"]: s.labels["state"] for fam in text_string_to_metric_families(text)
            if fam.name == HELD_METRIC for s in fam.samples if s.name == HELD_METRIC and s.value > 0}
