"""A thin layer over the kubernetes client: every read returns plain camelCase dicts (like kopf bodies)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from kubernetes import client
from kubernetes.client.rest import ApiException

from . import GROUP, VERSION
from .builders import LABEL_MANAGED, LABEL_NAME, MANAGER
from .inventory import LABEL_CARD_TYPES

PLURAL = "elasticinferences"


def _json(response) -> dict:
    return json.loads(response.data)


class Kube:
    def __init__(self, api_client: client.ApiClient):
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

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

    # writes (create is idempotent: AlreadyExists means another reconcile got there first)
    def create(self, obj: dict) -> bool:
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        create = {"Pod": self.core.create_namespaced_pod, "ConfigMap": self.core.create_namespaced_config_map,
                  "Service": self.core.create_namespaced_service}[kind]
        try:
            create(ns, obj)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    def delete_instance(self, namespace: str, owner: str, instance: int) -> None:
        sel = f"{LABEL_NAME}={owner},{GROUP}/instance={instance}"
        self.core.delete_collection_namespaced_pod(namespace, label_selector=sel, grace_period_seconds=0)
        self.core.delete_collection_namespaced_config_map(namespace, label_selector=sel)

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as err:
            if err.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        body = {"status": status}
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, body)

    def event(self, ei: dict, type_: str, reason: str, message: str) -> None:
        meta = ei["metadata"]
        now = dt.datetime.now(dt.UTC)
        self.core.create_namespaced_event(meta["namespace"], {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference",
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": type_, "reason": reason, "message": message[:1000],
            "firstTimestamp": now.isoformat(), "lastTimestamp": now.isoformat(), "count": 1,
            "source": {"component": MANAGER}, "reportingComponent": MANAGER,
        })
