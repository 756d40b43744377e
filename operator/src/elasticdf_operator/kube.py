"""A thin layer over the kubernetes client: every read returns plain camelCase dicts (like kopf bodies)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

from elasticdf_contract.names import (
    ANNOTATION_IDLE_SINCE,
    ANNOTATION_WIRING_DIGEST,
    AUTOSCALE_HISTORY_KEY,
    GROUP,
    LABEL_BUILD,
    LABEL_CARD_TYPES,
    LABEL_GATEWAY,
    LABEL_GROUP,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_ROLE,
    MANAGER,
    VERSION,
    autoscale_configmap_name,
    gateway_name,
    label_value,
)
from kubernetes import client
from kubernetes.client.rest import ApiException

from .state import Observed, project_configmap, project_node, project_pod

PLURAL = "elasticinferences"
log = logging.getLogger("elasticdf.kube")


def _json(response) -> dict:
    return json.loads(response.data)


class Kube:
    def __init__(self, api_client: client.ApiClient):
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)

    # reads (label-selected: never the whole cluster)
    def nodes(self) -> list[dict]:
        return _json(self.core.list_node(label_selector=LABEL_CARD_TYPES, _preload_content=False))["items"]

    def managed_pods(self) -> list[dict]:
        sel = f"{LABEL_MANAGED}={MANAGER}"
        return _json(self.core.list_pod_for_all_namespaces(label_selector=sel, _preload_content=False))["items"]

    def managed_configmaps(self) -> list[dict]:
        sel = f"{LABEL_MANAGED}={MANAGER}"
        raw = self.core.list_config_map_for_all_namespaces(label_selector=sel, _preload_content=False)
        return _json(raw)["items"]

    def observe(self) -> Observed:
        """Everything a reconcile needs, by listing (the kopf handlers use their indexes instead)."""
        return Observed([project_node(n) for n in self.nodes()], [project_pod(p) for p in self.managed_pods()],
                        [project_configmap(c) for c in self.managed_configmaps()
                         if LABEL_GROUP in (c["metadata"].get("labels") or {})], self.fabrics())

    def fabrics(self) -> list[dict]:
        try:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, "fabrics")["items"]
        except ApiException as err:
            if err.status == 404:
                return []
            raise

    def get_ei(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def autoscale_history(self, namespace: str, owner: str) -> str | None:
        """The autoscaler's saved history of `owner` (JSON), None when there is none."""
        try:
            cm = self.core.read_namespaced_config_map(autoscale_configmap_name(owner), namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return (cm.data or {}).get(AUTOSCALE_HISTORY_KEY)

    # writes (create is idempotent: AlreadyExists means another reconcile got there first)
    def create(self, obj: dict) -> dict | None:
        """The created object (projected like the index entries), or None when it already exists or its namespace
        is being deleted (the resource goes with it: nothing to create, nothing to retry)."""
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        create = {"Pod": self.core.create_namespaced_pod, "ConfigMap": self.core.create_namespaced_config_map,
                  "Service": self.core.create_namespaced_service, "Job": self.batch.create_namespaced_job}[kind]
        try:
            created = _json(create(ns, obj, _preload_content=False))
        except ApiException as err:
            if err.status == 409 or namespace_terminating(err):
                return None
            raise
        project = {"Pod": project_pod, "ConfigMap": project_configmap}.get(kind, lambda o: o)
        return {"kind": kind, **project(created)}

    def apply(self, obj: dict) -> None:
        """Server-side apply (creates or updates; fields we stop setting are removed, others' are kept)."""
        meta, kind = obj["metadata"], obj["kind"]
        patch = {"ConfigMap": self.core.patch_namespaced_config_map, "Service": self.core.patch_namespaced_service,
                 "Deployment": self.apps.patch_namespaced_deployment}[kind]
        patch(meta["name"], meta["namespace"], obj, field_manager=MANAGER, force=True,
              _content_type="application/apply-patch+yaml")

    def delete_group(self, namespace: str, owner: str, group: int) -> None:
        """Release a card group: its card pods and its ConfigMap (the reservation goes last)."""
        sel = f"{LABEL_NAME}={label_value(owner)},{LABEL_GROUP}={group}"
        self.core.delete_collection_namespaced_pod(namespace, label_selector=sel, grace_period_seconds=0)
        self.core.delete_collection_namespaced_config_map(namespace, label_selector=sel)

    def build_jobs(self, namespace: str) -> list[dict]:
        """The builder Jobs (label elasticdf.io/build) in the operator's namespace."""
        return _json(self.batch.list_namespaced_job(namespace, label_selector=LABEL_BUILD,
                                                    _preload_content=False))["items"]

    def build_pods(self, namespace: str) -> list[dict]:
        return _json(self.core.list_namespaced_pod(namespace, label_selector=LABEL_BUILD,
                                                   _preload_content=False))["items"]

    def pod_log_tail(self, namespace: str, pod: str, container: str | None, lines: int) -> str:
        """The last `lines` lines a container of a pod wrote ('' when the pod or its log is gone)."""
        try:
            return self.core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=lines)
        except ApiException as err:
            if err.status in (400, 404):
                return ""
            raise

    def patch_configmap_data(self, namespace: str, name: str, data: dict[str, str]) -> dict | None:
        """Merge `data` into a ConfigMap; the patched object (projected), None if it is gone."""
        try:
            patched = _json(self.core.patch_namespaced_config_map(name, namespace, {"data": data},
                                                                  _preload_content=False))
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return {"kind": "ConfigMap", **project_configmap(patched)}

    def annotate_idle(self, namespace: str, name: str, since: float | None) -> dict | None:
        """Set or clear a group ConfigMap's idle-since annotation; the patched object, None if it is gone."""
        body = {"metadata": {"annotations": {ANNOTATION_IDLE_SINCE: f"{since:.3f}" if since is not None else None}}}
        try:
            patched = _json(self.core.patch_namespaced_config_map(name, namespace, body, _preload_content=False))
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return {"kind": "ConfigMap", **project_configmap(patched)}

    def gateway_pods(self, namespace: str, owner: str) -> list[dict]:
        sel = f"{LABEL_GATEWAY}={label_value(owner)},{LABEL_ROLE}=gateway"
        return _json(self.core.list_namespaced_pod(namespace, label_selector=sel, _preload_content=False))["items"]

    def annotate_gateway_pods(self, namespace: str, owner: str, digest: str) -> None:
        """Set the wiring digest on the gateway pods of `owner` (the pod update makes the kubelet refresh the
        mounted wiring now); pods that went away meanwhile are skipped."""
        body = {"metadata": {"annotations": {ANNOTATION_WIRING_DIGEST: digest}}}
        for pod in self.gateway_pods(namespace, owner):
            try:
                self.core.patch_namespaced_pod(pod["metadata"]["name"], namespace, body)
            except ApiException as err:
                if err.status != 404:
                    raise

    def delete_owned(self, namespace: str, owner: str) -> int:
        """Delete every pod, ConfigMap, Service and the gateway Deployment of an ElasticInference; return how
        many pods and ConfigMaps were left (the gateway's pods go with its Deployment)."""
        sel = f"{LABEL_NAME}={label_value(owner)},{LABEL_MANAGED}={MANAGER}"
        try:
            self.apps.delete_namespaced_deployment(gateway_name(owner), namespace)
        except ApiException as err:
            if err.status != 404:
                raise
        self.core.delete_collection_namespaced_pod(namespace, label_selector=sel, grace_period_seconds=0)
        self.core.delete_collection_namespaced_config_map(namespace, label_selector=sel)
        services = self.core.list_namespaced_service(namespace, label_selector=sel).items
        for svc in services:
            try:
                self.core.delete_namespaced_service(svc.metadata.name, namespace)
            except ApiException as err:
                if err.status != 404:
                    raise
        left = self.core.list_namespaced_pod(namespace, label_selector=sel).items
        left += self.core.list_namespaced_config_map(namespace, label_selector=sel).items
        return len(left)

    def delete_pod(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete now (no kubelet confirms simulated pods); with uid, only that incarnation of the name."""
        body = client.V1DeleteOptions(grace_period_seconds=0,
                                      preconditions=client.V1Preconditions(uid=uid) if uid else None)
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body)
        except ApiException as err:
            if err.status in (404, 409):
                return False
            raise
        return True

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, name,
                                                          {"spec": {"replicas": replicas}})

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        """Write the status. One the API server rejects as invalid means its CRD is older than this operator
        (helm installs CRDs once and never upgrades them): that is logged in one line saying what to do, and
        the reconcile's actions stand; failing the handler would only hold every later pass back a minute."""
        body = {"status": status}
        try:
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, body)
        except ApiException as err:
            if err.status != 422:
                raise
            log.error("%s/%s: the API server rejects the status this operator writes (%s); the CRD installed is "
                      "probably older than the operator: kubectl apply --server-side -f charts/elastic-df/crds/",
                      namespace, name, rejection(err))

    def event(self, ei: dict, type_: str, reason: str, message: str) -> None:
        meta = ei["metadata"]
        now = dt.datetime.now(dt.UTC)
        stem = meta["name"][:240].rstrip(".-")  # the name + ".<12 hex>" stays a DNS subdomain (253)
        try:
            self.core.create_namespaced_event(meta["namespace"], {
                "metadata": {"name": f"{stem}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference",
                                   "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
                "type": type_, "reason": reason, "message": message[:1000],
                "firstTimestamp": now.isoformat(), "lastTimestamp": now.isoformat(), "count": 1,
                "source": {"component": MANAGER}, "reportingComponent": MANAGER,
            })
        except ApiException as err:
            if not namespace_terminating(err):  # the resource goes with its namespace: no one reads the event
                raise


def rejection(err: ApiException) -> str:
    """The API server's message of a rejected write (its Status body), else the HTTP reason."""
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(err.reason)


def namespace_terminating(err: ApiException) -> bool:
    """403 Forbidden because the namespace is being deleted (reason NamespaceTerminating in the causes)."""
    if err.status != 403 or not err.body:
        return False
    try:
        causes = (json.loads(err.body).get("details") or {}).get("causes") or []
    except (ValueError, AttributeError):
        return False
    return any(c.get("reason") == "NamespaceTerminating" for c in causes)
