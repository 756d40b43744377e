"""kopf handlers: thin triggers around reconcile.reconcile (run: kopf run -m elasticdf_operator.handlers)."""

from __future__ import annotations

import os

import kopf
from kubernetes import config

from . import GROUP, VERSION, metrics
from .builders import LABEL_MANAGED, LABEL_NAME, MANAGER
from .kube import PLURAL, Kube
from .reconcile import reconcile

RESOURCE = (GROUP, VERSION, PLURAL)
_state: dict[str, Kube] = {}


def kube() -> Kube:
    if "kube" not in _state:
        path = os.environ.get("KUBECONFIG")
        api = config.new_client_from_config(config_file=path) if path else _in_cluster()
        _state["kube"] = Kube(api)
    return _state["kube"]


def _in_cluster():
    from kubernetes import client

    config.load_incluster_config()
    return client.ApiClient()


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_) -> None:
    settings.posting.enabled = False  # events come from reconcile
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    metrics.serve(int(os.environ.get("ELASTICDF_METRICS_PORT", "0")))


def _run(body, **_) -> None:
    meta = body["metadata"]
    try:
        reconcile(kube(), dict(body))
    except Exception:
        metrics.RECONCILE_ERRORS.labels(meta["namespace"], meta["name"]).inc()
        raise


on_create = kopf.on.create(*RESOURCE, id="reconcile-create")(_run)
on_update = kopf.on.update(*RESOURCE, id="reconcile-update")(_run)
on_resume = kopf.on.resume(*RESOURCE, id="reconcile-resume")(_run)
on_timer = kopf.timer(*RESOURCE, id="resync", interval=float(os.environ.get("ELASTICDF_RESYNC_SECONDS", "5")),
                      idle=2)(_run)


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(name, namespace, **_) -> None:
    metrics.forget(namespace, name)


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED: MANAGER, LABEL_NAME: kopf.PRESENT})
def on_pod(body, **_) -> None:
    """A segment pod changed: reconcile its ElasticInference (status, replacement)."""
    meta = body["metadata"]
    ei = kube().get_ei(meta["namespace"], meta["labels"][LABEL_NAME])
    if ei is not None and not ei["metadata"].get("deletionTimestamp"):
        _run(ei)
