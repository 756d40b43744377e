"""act: apply a Decision's actions through the one typed Kubernetes interface (`kube.Kube`), in order, and
record them in the Ledger so the next snapshot shows them before the watches do.

A changed gateway wiring ConfigMap is followed by an annotation of the gateway pods with its digest: the
kubelet refreshes a mounted ConfigMap when it syncs the pod, and an update of the pod makes it sync now
instead of at its periodic resync (up to about a minute), so an activated standby instance joins the
rotation within about a second."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor, wait

from elasticdf_contract.names import LABEL_ROLE

from .builders import Owner
from .decide import Action, Apply, Create, DeleteGroup, DeletePod, Emit, MarkIdle
from .state import Ledger

POD_WRITERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="create-pods")


def execute(kube, ledger: Ledger, owner: Owner, actions: list[Action]) -> list[Emit]:
    """Apply everything but events (returned: the status step decides which to post). The card pods a run of
    Create actions makes are created at once (each API round trip is mostly waiting); everything else, and
    the order between a group's ConfigMap (its reservation) and its pods, stays sequential."""
    events = []
    for action in _batched(actions):
        match action:
            case list():
                create_pods(kube, ledger, [a.obj for a in action])
            case Create(obj):
                created = kube.create(obj)
                if created is not None and obj["kind"] in ("Pod", "ConfigMap"):
                    ledger.created(created)
            case DeletePod(name, uid):
                if kube.delete_pod(owner.namespace, name, uid):
                    ledger.deleted("Pod", uid)
            case DeleteGroup(index, cm_uid, pod_uids):
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
            case Emit():
                events.append(action)
    return events


def _is_pod(action: Action) -> bool:
    return isinstance(action, Create) and action.obj["kind"] == "Pod"


def _batched(actions: list[Action]) -> list[Action | list[Create]]:
    """Consecutive pod creations as one list, every other action as it is, in order."""
    out: list = []
    for action in actions:
        if _is_pod(action) and out and isinstance(out[-1], list):
            out[-1].append(action)
        else:
            out.append([action] if _is_pod(action) else action)
    return out


def create_pods(kube, ledger: Ledger, pods: list[dict]) -> None:
    """Create `pods` concurrently; every pod created is in the ledger before the first error is raised."""
    futures = [POD_WRITERS.submit(kube.create, pod) for pod in pods]
    wait(futures)
    for future in futures:
        if future.exception() is None and future.result() is not None:
            ledger.created(future.result())
    for future in futures:
        if future.exception() is not None:
            raise future.exception()

