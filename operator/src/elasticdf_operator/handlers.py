"""kopf handlers: thin triggers around plain functions (run: kopf run -m elasticdf_operator.handlers).

Indexes (kept current by kopf's watches, fully loaded before any handler runs) replace per-event listing:
`alveo_nodes` (nodes labelled elasticdf.io/card-types), `managed_pods` and `group_configmaps` (keyed by
(namespace, ElasticInference name)), `groups_by_node` (node -> the resources with a card on it),
`gateway_pods` (the autoscaler scrapes their fps) and `fabrics`. `snapshot()` turns them into the
`state.Observed` that reconcile.reconcile takes.
"""

from __future__ import annotations

import os

import kopf
from elasticdf_contract.names import (
    ANNOTATION_OWNER,
    LABEL_GATEWAY,
    LABEL_GROUP,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_ROLE,
    MANAGER,
    label_value,
)
from kubernetes import config

from . import GROUP, VERSION, builders, metrics
from .autoscale import AnnotationSource, FirstOf, History, ScrapeSource, autoscale
from .builders import cards_of
from .inventory import LABEL_CARD_TYPES, broken_cards
from .kube import PLURAL, Kube
from .reconcile import reconcile
from .state import LEDGER, Observed, owner_key, project_configmap, project_node, project_pod

RESOURCE = (GROUP, VERSION, PLURAL)
MANAGED = {LABEL_MANAGED: MANAGER, LABEL_NAME: kopf.PRESENT}
_state: dict[str, object] = {}
HISTORIES: dict[str, History] = {}


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


def metrics_source():
    if os.environ.get("ELASTICDF_SCRAPE", "1") == "0":
        return AnnotationSource()
    return FirstOf(AnnotationSource(), ScrapeSource())


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_) -> None:
    settings.posting.enabled = False  # events come from reconcile
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.execution.max_workers = int(os.environ.get("ELASTICDF_WORKERS", "8"))
    metrics.serve(int(os.environ.get("ELASTICDF_METRICS_PORT", "0")))


# ---- indexes ---------------------------------------------------------------------------------------

@kopf.index("", "v1", "nodes", labels={LABEL_CARD_TYPES: kopf.PRESENT})
def alveo_nodes(name, body, **_):
    return {name: project_node(body)}


@kopf.index("", "v1", "pods", labels=MANAGED)
def managed_pods(body, **_):
    pod = project_pod(body)
    return {owner_key(pod): pod}


@kopf.index("", "v1", "pods", labels={LABEL_GATEWAY: kopf.PRESENT, LABEL_ROLE: "gateway"})
def gateway_pods(body, namespace, labels, **_):
    return {(namespace, labels[LABEL_GATEWAY]): project_pod(body)}


@kopf.index("", "v1", "configmaps", labels={**MANAGED, LABEL_GROUP: kopf.PRESENT})
def group_configmaps(body, **_):
    cm = project_configmap(body)
    return {owner_key(cm): cm}


@kopf.index("", "v1", "configmaps", labels={**MANAGED, LABEL_GROUP: kopf.PRESENT})
def groups_by_node(body, **_):
    cm = project_configmap(body)
    owner = (cm["metadata"]["namespace"], cm["metadata"]["annotations"].get(ANNOTATION_OWNER))
    return {card["node"]: owner for card in cards_of(cm)}


@kopf.index(GROUP, VERSION, "fabrics")
def fabrics(name, body, **_):
    return {name: {"metadata": {"name": name}, "spec": dict(body.get("spec") or {})}}


def snapshot(indexes: dict) -> Observed:
    def values(index) -> list[dict]:
        return [v for store in index.values() for v in store] if index is not None else []

    return Observed(values(indexes["alveo_nodes"]), values(indexes["managed_pods"]),
                    values(indexes["group_configmaps"]), values(indexes.get("fabrics")))


# ---- reconcile triggers ------------------------------------------------------------------------------

def _run(body, alveo_nodes, managed_pods, group_configmaps, fabrics=None, **_) -> None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return
    indexes = {"alveo_nodes": alveo_nodes, "managed_pods": managed_pods,
               "group_configmaps": group_configmaps, "fabrics": fabrics}
    try:
        reconcile(kube(), dict(body), lambda: snapshot(indexes), LEDGER)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(meta["namespace"], meta["name"]).inc()
        raise


on_create = kopf.on.create(*RESOURCE, id="reconcile-create")(_run)
on_update = kopf.on.update(*RESOURCE, id="reconcile-update", field="spec")(_run)
on_resume = kopf.on.resume(*RESOURCE, id="reconcile-resume")(_run)
on_timer = kopf.timer(*RESOURCE, id="resync", interval=float(os.environ.get("ELASTICDF_RESYNC_SECONDS", "5")),
                      idle=2)(_run)


@kopf.timer(*RESOURCE, id="autoscale", interval=float(os.environ.get("ELASTICDF_AUTOSCALE_SECONDS", "5")),
            when=lambda spec, **_: bool(spec.get("autoscaling")))
def on_autoscale(body, namespace, name, managed_pods, gateway_pods=None, **_) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return
    key = (namespace, label_value(name))
    pods = list(managed_pods.get(key, [])) + list((gateway_pods or {}).get(key, []))
    autoscale(kube(), dict(body), pods, metrics_source(), HISTORIES)


@kopf.on.delete(*RESOURCE, id="cleanup")
def on_delete(name, namespace, uid, **_) -> None:
    """Finalizer: delete every pod, ConfigMap, Service and the gateway of the resource now (not when GC gets
    to it)."""
    left = kube().delete_owned(namespace, name)
    LEDGER.forget_applied(namespace, (builders.gateway_name(name), builders.gateway_configmap_name(name),
                                      builders.gateway_service(name)))
    metrics.forget(namespace, name)
    HISTORIES.pop(uid, None)
    if left:
        raise kopf.TemporaryError(f"{left} object(s) still being deleted", delay=1)


def _reconcile_owner(namespace: str, name: str, **indexes) -> None:
    ei = kube().get_ei(namespace, name)
    if ei is not None and not ei["metadata"].get("deletionTimestamp"):
        _run(ei, **indexes)


@kopf.on.event("", "v1", "pods", labels=MANAGED, id="segment-pod")
def on_pod(body, type, alveo_nodes, managed_pods, group_configmaps, fabrics=None, **_) -> None:
    """A card pod failed or went away: reconcile its ElasticInference (replacement, status)."""
    meta = body["metadata"]
    phase = (body.get("status") or {}).get("phase")
    ready = any(c.get("type") == "Ready" for c in (body.get("status") or {}).get("conditions") or [])
    if type in ("DELETED", "MODIFIED") and (type == "DELETED" or phase == "Failed" or ready):
        owner = (meta.get("annotations") or {}).get(ANNOTATION_OWNER) or meta["labels"][LABEL_NAME]
        _reconcile_owner(meta["namespace"], owner, alveo_nodes=alveo_nodes,
                         managed_pods=managed_pods, group_configmaps=group_configmaps, fabrics=fabrics)


@kopf.on.event("", "v1", "nodes", labels={LABEL_CARD_TYPES: kopf.PRESENT}, id="alveo-node")
def on_node(body, name, type, groups_by_node, alveo_nodes, managed_pods, group_configmaps, fabrics=None,
            **_) -> None:
    """An Alveo node was deleted, went NotReady or lost cards: reconcile only the resources on it."""
    owners = {o for o in groups_by_node.get(name, []) if o}
    if not owners:
        return
    nodes = [] if type == "DELETED" else [project_node(body)]
    held = [c for store in group_configmaps.values() for cm in store for c in cards_of(cm) if c["node"] == name]
    if not broken_cards(held, nodes, catalog()):
        return
    for namespace, owner in sorted(owners):
        _reconcile_owner(namespace, owner, alveo_nodes=alveo_nodes, managed_pods=managed_pods,
                         group_configmaps=group_configmaps, fabrics=fabrics)


def catalog():
    if "catalog" not in _state:
        from elasticdf_partitioner.catalog import load_catalog

        _state["catalog"] = load_catalog()
    return _state["catalog"]
