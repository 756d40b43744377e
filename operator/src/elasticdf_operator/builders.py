"""Plan -> Kubernetes objects (pure functions): per instance a wiring ConfigMap and one Pod per segment,
per ElasticInference a headless Service (segment DNS names) and a Service for the gateway."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from elasticdf_partitioner.catalog import Catalog
from elasticdf_partitioner.plan import Instance
from elasticdf_partitioner.wiring import Artifacts, Endpoint, SegmentWiring

from . import GROUP, VERSION
from .api import ElasticInferenceSpec
from .inventory import ANNOTATION_CARD, ANNOTATION_CARDS

LABEL_NAME = f"{GROUP}/name"
LABEL_INSTANCE = f"{GROUP}/instance"
LABEL_SEGMENT = f"{GROUP}/segment"
LABEL_ROLE = f"{GROUP}/role"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGER = "elasticdf-operator"
ANNOTATION_FPS = f"{GROUP}/fps"
ANNOTATION_COST = f"{GROUP}/cost-per-hour"
DATA_PORT = 7000  # emulation: TCP port of a segment; xrt: UDP port base of the QSFP stack
GATEWAY_PORT = 8000
HEALTH_PORT = 8080
WIRING_DIR = "/etc/elasticdf"
DEFAULT_POOL = "10.100.0.0/16"


@dataclass(frozen=True)
class Owner:
    """The ElasticInference the objects belong to."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "name": self.name,
                "uid": self.uid, "controller": True, "blockOwnerDeletion": True}


def pod_name(owner: str, instance: int, segment: int) -> str:
    return f"{owner}-{instance}-s{segment}"


def configmap_name(owner: str, instance: int) -> str:
    return f"{owner}-{instance}-wiring"


def segments_service(owner: str) -> str:
    return f"{owner}-segments"


def gateway_service(owner: str) -> str:
    return f"{owner}-gateway"


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
            artifacts=Artifacts(onnx=spec.model.artifacts.onnx if spec.model.artifacts else None,
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


def segment_pod(owner: Owner, spec: ElasticInferenceSpec, w: SegmentWiring, catalog: Catalog) -> dict:
    resource = catalog.card(w.card_type).device_plugin_resource
    image = spec.runtime.image if spec.runtime else "ghcr.io/elasticdf/segment:latest"
    cm = configmap_name(owner.name, w.instance)
    path = f"{WIRING_DIR}/segment-{w.segment}.json"
    env = {"ELASTICDF_WIRING": path, "ELASTICDF_INSTANCE": str(w.instance), "ELASTICDF_SEGMENT": str(w.segment),
           "ELASTICDF_MODE": w.mode, "ELASTICDF_CARD": str(w.card)}
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
                "volumeMounts": [{"name": "wiring", "mountPath": WIRING_DIR, "readOnly": True}],
            }],
            "volumes": [{"name": "wiring", "configMap": {"name": cm}}],
        },
    }


def services(owner: Owner) -> list[dict]:
    headless = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": segments_service(owner.name), "namespace": owner.namespace,
                     "labels": labels(owner.name, role="segments"), "ownerReferences": [owner.reference()]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {LABEL_NAME: owner.name, LABEL_ROLE: "segment"},
                 "ports": [{"name": "data", "port": DATA_PORT}]},
    }
    gateway = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": gateway_service(owner.name), "namespace": owner.namespace,
                     "labels": labels(owner.name, role="gateway"), "ownerReferences": [owner.reference()]},
        "spec": {"selector": {LABEL_NAME: owner.name, LABEL_ROLE: "gateway"},
                 "ports": [{"name": "http", "port": GATEWAY_PORT}]},
    }
    return [headless, gateway]
