"""Plan -> Kubernetes objects (pure functions): per instance a wiring ConfigMap and one Pod per segment,
per ElasticInference a headless Service (segment DNS names) and the inference gateway: a Deployment, the
ConfigMap with every instance's wiring it mounts, and the Service `<name>-gateway` the segments send to."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from elasticdf_partitioner.artifacts import FetchPolicy
from elasticdf_partitioner.catalog import Catalog
from elasticdf_partitioner.plan import Instance
from elasticdf_partitioner.wiring import Artifacts, Endpoint, SegmentWiring
from elasticdf_partitioner.zoo import zoo_uri

from . import GROUP, VERSION
from .api import DEFAULT_GATEWAY_IMAGE, DEFAULT_SEGMENT_IMAGE, ElasticInferenceSpec
from .inventory import ANNOTATION_CARD, ANNOTATION_CARDS

LABEL_NAME = f"{GROUP}/name"
LABEL_INSTANCE = f"{GROUP}/instance"
LABEL_SEGMENT = f"{GROUP}/segment"
LABEL_ROLE = f"{GROUP}/role"
# gateway pods carry this instead of LABEL_NAME: they are not segment pods (no instance, no card)
LABEL_GATEWAY = f"{GROUP}/gateway"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGER = "elasticdf-operator"
ANNOTATION_FPS = f"{GROUP}/fps"
ANNOTATION_COST = f"{GROUP}/cost-per-hour"
DATA_PORT = 7000  # emulation: TCP port of a segment; xrt: UDP port base of the QSFP stack
GATEWAY_PORT = 8000
GATEWAY_GRPC_PORT = 8001  # the Open Inference Protocol's gRPC port (images/gateway: --grpc-port)
HEALTH_PORT = 8080
WIRING_DIR = "/etc/elasticdf"
GATEWAY_WIRING_DIR = f"{WIRING_DIR}/gateway"
GATEWAY_USER = 10001  # the gateway image's non-root user (images/gateway/Dockerfile)
DEFAULT_POOL = "10.100.0.0/16"
# where a segment pod keeps fetched models (emptyDir), mounts pvc:// claims and the oci:// pull secret
MODEL_CACHE_DIR = "/var/cache/elasticdf/models"
PVC_ROOT = "/var/lib/elasticdf/pvc"
PULL_SECRET_DIR = "/var/run/secrets/elasticdf/registry"


@dataclass(frozen=True)
class Owner:
    """The ElasticInference the objects belong to."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "name": self.name,
                "uid": self.uid, "controller": True, "blockOwnerDeletion": True}


@dataclass(frozen=True)
class PodFetch:
    """How segment pods fetch spec.model.artifacts: the operator's own policy (elasticdf_partitioner.artifacts:
    size limit, file root, plain-http registries) and the name of the oci:// pull secret, which must exist in
    the ElasticInference's namespace (like imagePullSecrets; the volume is optional, so pods start without it)."""

    env: tuple[tuple[str, str], ...] = ()
    max_bytes: int = 0
    pull_secret: str | None = None

    @classmethod
    def of(cls, policy: FetchPolicy, pull_secret: str | None) -> PodFetch:
        return cls(tuple(sorted(policy.env().items())), policy.max_bytes, pull_secret or None)


def pod_name(owner: str, instance: int, segment: int) -> str:
    return f"{owner}-{instance}-s{segment}"


def configmap_name(owner: str, instance: int) -> str:
    return f"{owner}-{instance}-wiring"


def segments_service(owner: str) -> str:
    return f"{owner}-segments"


def gateway_service(owner: str) -> str:
    return f"{owner}-gateway"


def gateway_name(owner: str) -> str:
    """The gateway Deployment (same name as its Service)."""
    return f"{owner}-gateway"


def gateway_configmap_name(owner: str) -> str:
    return f"{owner}-gateway-wiring"


def served_model(owner: str, model_name: str | None) -> str:
    """The name in /v2/models/{name}: the zoo model's name, else the ElasticInference's."""
    return model_name or owner


def endpoint(owner: Owner, model: str) -> str:
    return f"http://{gateway_service(owner.name)}.{owner.namespace}.svc:{GATEWAY_PORT}/v2/models/{model}"


def selector(owner: str) -> str:
    return f"{LABEL_NAME}={owner},{LABEL_ROLE}=segment"


def labels(owner: str, instance: int | None = None, segment: int | None = None, role: str = "segment") -> dict:
    out = {LABEL_NAME: owner, LABEL_ROLE: role, LABEL_MANAGED: MANAGER}
    if instance is not None:
        out[LABEL_INSTANCE] = str(instance)
    if segment is not None:
        out[LABEL_SEGMENT] = str(segment)
    return out


def resolve_mode(spec: ElasticInferenceSpec, node_labels: dict[str, str]) -> str:
    """auto -> xrt on nodes labelled elasticdf.io/runtime=xrt, else emulation (simulated or CPU-only)."""
    mode = spec.runtime.mode if spec.runtime else "auto"
    if mode != "auto":
        return mode
    return "xrt" if node_labels.get(f"{GROUP}/runtime") == "xrt" else "emulation"


def qsfp_address(pool: str, node_ordinal: int, card: int, port: int = 0) -> tuple[str, str]:
    """Deterministic QSFP IP and locally administered MAC: 16 cards x 2 ports per node in the pool."""
    network = ipaddress.ip_network(pool)
    offset = 1 + node_ordinal * 32 + card * 2 + port
    if offset >= network.num_addresses - 1:
        raise ValueError(f"QSFP address pool {pool} is too small for node #{node_ordinal}")
    ip = network.network_address + offset
    mac = "02:ed:f0:" + ":".join(f"{b:02x}" for b in ip.packed[1:])
    return str(ip), mac


def _endpoint(owner: Owner, mode: str, instance: int, segment: int, node_ordinal: int, card: int,
              pool: str) -> Endpoint:
    if mode == "xrt":
        ip, mac = qsfp_address(pool, node_ordinal, card)
        return Endpoint(kind="qsfp", ip=ip, mac=mac, port=DATA_PORT)
    host = f"{pod_name(owner.name, instance, segment)}.{segments_service(owner.name)}.{owner.namespace}.svc"
    return Endpoint(kind="pod", host=host, port=DATA_PORT)


def wiring(owner: Owner, spec: ElasticInferenceSpec, index: int, instance: Instance, mode: str,
           node_ordinals: dict[str, int], physical: list[int], pool: str = DEFAULT_POOL) -> list[SegmentWiring]:
    """One SegmentWiring per segment; `physical[i]` is the node-local card index of segment i."""
    gateway = Endpoint(kind="gateway", host=f"{gateway_service(owner.name)}.{owner.namespace}.svc",
                       port=GATEWAY_PORT)
    listens = [_endpoint(owner, mode, index, i, node_ordinals.get(s.node, 0), physical[i], pool)
               for i, s in enumerate(instance.segments)]
    model = spec.model.name or spec.model.artifacts.onnx
    bitstreams = spec.model.artifacts.bitstreams if spec.model.artifacts else []
    out = []
    n = len(instance.segments)
    for i, seg in enumerate(instance.segments):
        out.append(SegmentWiring(
            instance_id=f"{owner.namespace}/{owner.name}-{index}", instance=index, segment=i, segments=n,
            mode=mode, model=model, node=seg.node, card=physical[i], card_type=seg.card_type, slrs=seg.slrs,
            layer_range=seg.layer_range, layers=seg.layers,
            artifacts=Artifacts(onnx=spec.model.artifacts.onnx if spec.model.artifacts else zoo_uri(model),
                                onnx_sha256=spec.model.artifacts.sha256 if spec.model.artifacts else None,
                                xclbin=bitstreams[i] if i < len(bitstreams) else None),
            listen=listens[i], upstream=listens[i - 1] if i else gateway,
            downstream=listens[i + 1] if i + 1 < n else gateway))
    return out


def instance_configmap(owner: Owner, index: int, wirings: list[SegmentWiring], fps: float,
                       cost_per_hour: float) -> dict:
    """The instance record: its wiring and the cards it holds (written before its pods)."""
    cards = [{"node": w.node, "card": w.card, "type": w.card_type} for w in wirings]
    data = {f"segment-{w.segment}.json": w.model_dump_json() for w in wirings}
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": configmap_name(owner.name, index), "namespace": owner.namespace,
                     "labels": labels(owner.name, index, role="instance"),
                     "annotations": {ANNOTATION_CARDS: json.dumps(cards), ANNOTATION_FPS: f"{fps:.3f}",
                                     ANNOTATION_COST: f"{cost_per_hour:.4f}"},
                     "ownerReferences": [owner.reference()]},
        "data": data,
    }


def cards_of(configmap: dict) -> list[dict]:
    """The cards an instance ConfigMap reserves: [{node, card, type}]."""
    return json.loads((configmap["metadata"].get("annotations") or {}).get(ANNOTATION_CARDS, "[]"))


def wirings_of(configmap: dict) -> list[SegmentWiring]:
    items = sorted(configmap.get("data", {}).items())
    found = [SegmentWiring.model_validate_json(v) for k, v in items if k.startswith("segment-")]
    return sorted(found, key=lambda w: w.segment)


def model_fetch_mounts(spec: ElasticInferenceSpec, fetch: PodFetch) -> tuple[dict, list[dict], list[dict]]:
    """(env, volumes, volume mounts) a segment pod needs to fetch spec.model.artifacts with the shared policy."""
    if spec.model.artifacts is None:
        return {}, [], []
    env = {**dict(fetch.env), "ELASTICDF_MODEL_CACHE": MODEL_CACHE_DIR, "ELASTICDF_MODEL_PVC_ROOT": PVC_ROOT}
    cache = {"emptyDir": {"sizeLimit": str(fetch.max_bytes)}} if fetch.max_bytes else {"emptyDir": {}}
    volumes = [{"name": "model-cache", **cache}]
    mounts = [{"name": "model-cache", "mountPath": MODEL_CACHE_DIR}]
    uri = urlsplit(spec.model.artifacts.onnx)
    if uri.scheme == "pvc" and uri.netloc:
        volumes.append({"name": "model-pvc", "persistentVolumeClaim": {"claimName": uri.netloc, "readOnly": True}})
        mounts.append({"name": "model-pvc", "mountPath": f"{PVC_ROOT}/{uri.netloc}", "readOnly": True})
    if uri.scheme == "oci" and fetch.pull_secret:
        volumes.append({"name": "model-pull-secret", "secret": {
            "secretName": fetch.pull_secret, "optional": True,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}})
        mounts.append({"name": "model-pull-secret", "mountPath": PULL_SECRET_DIR, "readOnly": True})
        env["ELASTICDF_MODEL_DOCKER_CONFIG"] = f"{PULL_SECRET_DIR}/config.json"
    return env, volumes, mounts


def segment_pod(owner: Owner, spec: ElasticInferenceSpec, w: SegmentWiring, catalog: Catalog,
                fetch: PodFetch = PodFetch()) -> dict:
    resource = catalog.card(w.card_type).device_plugin_resource
    image = spec.runtime.image if spec.runtime else DEFAULT_SEGMENT_IMAGE
    cm = configmap_name(owner.name, w.instance)
    path = f"{WIRING_DIR}/segment-{w.segment}.json"
    fetch_env, fetch_volumes, fetch_mounts = model_fetch_mounts(spec, fetch)
    env = {"ELASTICDF_WIRING": path, "ELASTICDF_INSTANCE": str(w.instance), "ELASTICDF_SEGMENT": str(w.segment),
           "ELASTICDF_MODE": w.mode, "ELASTICDF_CARD": str(w.card), **fetch_env}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(owner.name, w.instance, w.segment), "namespace": owner.namespace,
                     "labels": labels(owner.name, w.instance, w.segment),
                     "annotations": {ANNOTATION_CARD: f"{w.node}/{w.card}"},
                     "ownerReferences": [owner.reference()]},
        "spec": {
            "hostname": pod_name(owner.name, w.instance, w.segment),
            "subdomain": segments_service(owner.name),
            "restartPolicy": "Always",
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [w.node]}]}]}}},
            "containers": [{
                "name": "segment", "image": image,
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "ports": [{"name": "data", "containerPort": DATA_PORT},
                          {"name": "health", "containerPort": HEALTH_PORT}],
                "resources": {"limits": {resource: "1"}, "requests": {resource: "1"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}, "periodSeconds": 5},
                "volumeMounts": [{"name": "wiring", "mountPath": WIRING_DIR, "readOnly": True}, *fetch_mounts],
            }],
            "volumes": [{"name": "wiring", "configMap": {"name": cm}}, *fetch_volumes],
        },
    }


def segments_headless_service(owner: Owner) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": segments_service(owner.name), "namespace": owner.namespace,
                     "labels": labels(owner.name, role="segments"), "ownerReferences": [owner.reference()]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {LABEL_NAME: owner.name, LABEL_ROLE: "segment"},
                 "ports": [{"name": "data", "port": DATA_PORT}]},
    }


def gateway_selector(owner: str) -> dict:
    return {LABEL_GATEWAY: owner, LABEL_ROLE: "gateway"}


def gateway_service_object(owner: Owner) -> dict:
    """Where clients and the last segments reach the gateway pods (GATEWAY_PORT: REST and results;
    GATEWAY_GRPC_PORT: gRPC)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": gateway_service(owner.name), "namespace": owner.namespace,
                     "labels": labels(owner.name, role="gateway"), "ownerReferences": [owner.reference()]},
        "spec": {"selector": gateway_selector(owner.name),
                 "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"},
                           {"name": "grpc", "port": GATEWAY_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"}]},
    }


def services(owner: Owner) -> list[dict]:
    return [segments_headless_service(owner), gateway_service_object(owner)]


def gateway_configmap(owner: Owner, instance_configmaps: list[dict]) -> dict:
    """Every instance's wiring in one ConfigMap (`instance-<i>-segment-<s>.json`), mounted by the gateway.

    The kubelet updates a mounted ConfigMap in place and the gateway re-reads it when its content changes,
    so scaling and re-planning reach the gateway without restarting it. No instances: empty, gateway unready."""
    data = {}
    for cm in instance_configmaps:
        index = cm["metadata"]["labels"][LABEL_INSTANCE]
        for key, value in (cm.get("data") or {}).items():
            if key.startswith("segment-"):
                data[f"instance-{index}-{key}"] = value
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": gateway_configmap_name(owner.name), "namespace": owner.namespace,
                     "labels": labels(owner.name, role="gateway"), "ownerReferences": [owner.reference()]},
        "data": dict(sorted(data.items())),
    }


def gateway_deployment(owner: Owner, spec: ElasticInferenceSpec) -> dict:
    """The inference endpoint: KServe v2 REST on GATEWAY_PORT (gRPC on GATEWAY_GRPC_PORT), in front of the
    instances of `owner`. It runs where spec.placement.nodeSelector allows, like the segments: a selector that
    keeps the model off some nodes (e.g. simulated ones whose pods never run) keeps its endpoint off them too.

    `replicas` is left out: the Deployment starts with one and whoever scales it (a user, an HPA) keeps it."""
    image = spec.runtime.gateway_image if spec.runtime else DEFAULT_GATEWAY_IMAGE
    model = served_model(owner.name, spec.model.name)
    node_selector = spec.placement.node_selector if spec.placement else None
    pod_labels = {**gateway_selector(owner.name), "app.kubernetes.io/name": "elasticdf-gateway"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": gateway_name(owner.name), "namespace": owner.namespace,
                     "labels": labels(owner.name, role="gateway"), "ownerReferences": [owner.reference()]},
        "spec": {
            "selector": {"matchLabels": gateway_selector(owner.name)},
            "revisionHistoryLimit": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,  # it talks to segment pods only
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": GATEWAY_USER,
                                        "runAsGroup": GATEWAY_USER, "fsGroup": GATEWAY_USER,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "gateway", "image": image,
                        "args": [f"--model={model}", f"--wiring={GATEWAY_WIRING_DIR}", f"--port={GATEWAY_PORT}",
                                 f"--grpc-port={GATEWAY_GRPC_PORT}", f"--segment-health-port={HEALTH_PORT}",
                                 "--reload-seconds=1"],
                        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"},
                                  {"name": "grpc", "containerPort": GATEWAY_GRPC_PORT, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                                           "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                                          "periodSeconds": 10, "failureThreshold": 6},
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                      "limits": {"cpu": "2", "memory": "1Gi"}},
                        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "wiring", "mountPath": GATEWAY_WIRING_DIR, "readOnly": True}],
                    }],
                    "volumes": [{"name": "wiring", "configMap": {"name": gateway_configmap_name(owner.name)}}],
                    **({"nodeSelector": dict(node_selector)} if node_selector else {}),
                },
            },
        },
    }


def gateway_objects(owner: Owner, spec: ElasticInferenceSpec, instance_configmaps: list[dict]) -> list[dict]:
    """What the gateway needs, in apply order: its wiring first, so the pod mounts a complete one."""
    return [gateway_configmap(owner, instance_configmaps), gateway_service_object(owner),
            gateway_deployment(owner, spec)]
