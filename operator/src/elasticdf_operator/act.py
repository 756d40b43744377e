"""act: apply a Decision's actions through the one typed Kubernetes interface (`kube.Kube`), in order, and
record them in the Ledger so the next snapshot shows them before the watches do.

A changed gateway wiring ConfigMap is followed by an annotation of the gateway pods with its digest: the
kubelet refreshes a mounted ConfigMap when it syncs the pod, and an update of the pod makes it sync now
instead of at its periodic resync (up to about a minute), so an activated standby instance joins the
rotation within about a second."""

from __future__ import annotations

import hashlib
import json

from elasticdf_contract.names import LABEL_ROLE

from .builders import Owner
from .decide import Action, Apply, Create, CreateBuildJob, DeleteGroup, DeletePod, Emit, MarkIdle, UpdateWiring
from .state import Ledger


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
