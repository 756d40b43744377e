"""Plan -> Kubernetes objects (pure functions): per card group a ConfigMap (the cards it holds, every card's
wiring, its instances and builds) and one Pod per card, per ElasticInference a headless Service (card pod DNS
names) and the inference gateway: a Deployment, the ConfigMap with the *active* instances' wiring it mounts
(standby instances are left out: out of rotation), and the Service `<name>-gateway` the segments send to."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from elasticdf_contract.builds import BUILD_DIR, RECORD_ENV, BuildRecord, build_tag, segment_order
from elasticdf_contract.names import (
    ANNOTATION_BUILD_ATTEMPT,
    ANNOTATION_CARD,
    ANNOTATION_CARDS,
    ANNOTATION_COST,
    ANNOTATION_FPS,
    ANNOTATION_IDLE_SINCE,
    ANNOTATION_OWNER,
    AUTOSCALE_HISTORY_KEY,
    DATA_PORT,
    GATEWAY_GRPC_PORT,
    GATEWAY_PORT,
    GATEWAY_WIRING_DIR,
    GROUP,
    HEALTH_PORT,
    LABEL_BUILD,
    LABEL_CARD,
    LABEL_GATEWAY,
    LABEL_GROUP,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_ROLE,
    LABEL_RUNTIME,
    MANAGER,
    VERSION,
    WIRING_DIR,
    autoscale_configmap_name,
    build_job_name,
    card_pod_name,
    card_wiring_key,
    cards_service,
    gateway_configmap_name,
    gateway_name,
    gateway_wiring_key,
    group_configmap_name,
    label_value,
)
from elasticdf_contract.wiring import Artifacts, CardWiring, Endpoint, SegmentWiring
from elasticdf_partitioner.artifacts import FetchPolicy
from elasticdf_partitioner.catalog import Catalog
from elasticdf_partitioner.plan import Instance
from elasticdf_partitioner.zoo import zoo_uri

from .api import DEFAULT_GATEWAY_IMAGE, DEFAULT_SEGMENT_IMAGE, ElasticInferenceSpec
from .buildjobs import BuildSettings

DEFAULT_POOL = "10.100.0.0/16"
GATEWAY_USER = 10001  # the gateway image's non-root user (images/gateway/Dockerfile)
# where a card pod keeps fetched models (emptyDir), mounts pvc:// claims and the oci:// pull secret
MODEL_CACHE_DIR = "/var/cache/elasticdf/models"
PVC_ROOT = "/var/lib/elasticdf/pvc"
PULL_SECRET_DIR = "/var/run/secrets/elasticdf/registry"
BUILD_PULL_SECRET_DIR = "/var/run/secrets/elasticdf/build-registry"
# builder Jobs: the bundle the `bundle` step writes, the artifact the `build` step writes and `push` pushes
BUNDLE_DIR, OUT_DIR = "/bundle", "/out"
LICENSE_DIR = "/var/run/secrets/elasticdf/license"


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


@dataclass(frozen=True)
class BuildPull:
    """How card pods pull their card build (chart values builds.insecure, builds.pullSecret): plain http to the
    registry, and the dockerconfigjson secret in the ElasticInference's namespace (optional, as for models)."""

    insecure: bool = False
    pull_secret: str | None = None


def build_pull(card: CardWiring, image: str, pull: BuildPull) -> tuple[list[dict], list[dict], list[dict]]:
    """(init containers, volumes, main container mounts) that put the card's build into BUILD_DIR, verified,
    before the segments start (`elasticdf build pull`); nothing when the wiring names no build artifact."""
    reference = card.segments[0].artifacts.build
    if not reference:
        return [], [], []
    command = ["elasticdf", "build", "pull", reference, "--build", card.build, "-o", BUILD_DIR]
    volumes = [{"name": "build", "emptyDir": {}}]
    mounts = [{"name": "build", "mountPath": BUILD_DIR}]
    if pull.insecure:
        command.append("--insecure")
    if pull.pull_secret:
        volumes.append({"name": "build-pull-secret", "secret": {
            "secretName": pull.pull_secret, "optional": True,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}})
        mounts.append({"name": "build-pull-secret", "mountPath": BUILD_PULL_SECRET_DIR, "readOnly": True})
        command += ["--docker-config", f"{BUILD_PULL_SECRET_DIR}/config.json"]
    init = {"name": "build", "image": image, "command": command, "volumeMounts": mounts}
    return [init], volumes, [{**mounts[0], "readOnly": True}]


def gateway_service(owner: str) -> str:
    return gateway_name(owner)


def served_model(owner: str, model_name: str | None) -> str:
    """The name in /v2/models/{name}: the zoo model's name, else the ElasticInference's."""
    return model_name or owner


def endpoint(owner: Owner, model: str) -> str:
    return f"http://{gateway_service(owner.name)}.{owner.namespace}.svc:{GATEWAY_PORT}/v2/models/{model}"


def grpc_endpoint(owner: Owner) -> str:
    return f"{gateway_service(owner.name)}.{owner.namespace}.svc:{GATEWAY_GRPC_PORT}"


def selector(owner: str) -> str:
    return f"{LABEL_NAME}={label_value(owner)},{LABEL_ROLE}=card"


def labels(owner: str, role: str, group: int | None = None, card: int | None = None) -> dict:
    out = {LABEL_NAME: label_value(owner), LABEL_ROLE: role, LABEL_MANAGED: MANAGER}
    if group is not None:
        out[LABEL_GROUP] = str(group)
    if card is not None:
        out[LABEL_CARD] = str(card)
    return out


def _meta(owner: Owner, name: str, labels_: dict, annotations: dict | None = None) -> dict:
    return {"name": name, "namespace": owner.namespace, "labels": labels_,
            "annotations": {ANNOTATION_OWNER: owner.name, **(annotations or {})},
            "ownerReferences": [owner.reference()]}


def resolve_mode(spec: ElasticInferenceSpec, node_labels: dict[str, str]) -> str:
    """auto -> xrt on nodes labelled elasticdf.io/runtime=xrt, else emulation (simulated or CPU-only)."""
    mode = spec.runtime.mode if spec.runtime else "auto"
    if mode != "auto":
        return mode
    return "xrt" if node_labels.get(LABEL_RUNTIME) == "xrt" else "emulation"


def qsfp_address(pool: str, node_ordinal: int, card: int, port: int = 0) -> tuple[str, str]:
    """Deterministic QSFP IP and locally administered MAC: 16 cards x 2 ports per node in the pool."""
    network = ipaddress.ip_network(pool)
    offset = 1 + node_ordinal * 32 + card * 2 + port
    if offset >= network.num_addresses - 1:
        raise ValueError(f"QSFP address pool {pool} is too small for node #{node_ordinal}")
    ip = network.network_address + offset
    mac = "02:ed:f0:" + ":".join(f"{b:02x}" for b in ip.packed[1:])
    return str(ip), mac


@dataclass(frozen=True)
class CardPlace:
    """A card of a group: where it is and what it runs (position = index of the card in the group)."""

    node: str
    card: int  # physical index on the node
    card_type: str
    node_ordinal: int
    build: str


def listen_endpoint(owner: Owner, mode: str, group: int, position: int, place: CardPlace, slot: int,
                    pool: str) -> Endpoint:
    """The data address of the `slot`-th segment hosted on a card: its own port on the card's address."""
    if mode == "xrt":
        ip, mac = qsfp_address(pool, place.node_ordinal, place.card)
        return Endpoint(kind="qsfp", ip=ip, mac=mac, port=DATA_PORT + slot)
    host = f"{card_pod_name(owner.name, group, position)}.{cards_service(owner.name)}.{owner.namespace}.svc"
    return Endpoint(kind="pod", host=host, port=DATA_PORT + slot)


def group_wiring(owner: Owner, spec: ElasticInferenceSpec, group: int, mode: str, cards: list[CardPlace],
                 instances: list[tuple[int, Instance]], position: dict[tuple[str, int], int],
                 pool: str = DEFAULT_POOL) -> list[CardWiring]:
    """One CardWiring per card of a group. `instances` are (instance index, planned instance); `position` maps a
    planned segment's (node, physical card) to the card's position in `cards`."""
    gateway = Endpoint(kind="gateway", host=f"{gateway_service(owner.name)}.{owner.namespace}.svc",
                       port=GATEWAY_PORT)
    model = spec.model.name or spec.model.artifacts.onnx
    onnx = spec.model.artifacts.onnx if spec.model.artifacts else zoo_uri(model)
    digest = spec.model.artifacts.sha256 if spec.model.artifacts else None
    hosted: dict[int, list[tuple[str, SegmentWiring]]] = {p: [] for p in range(len(cards))}  # (build order, ..)
    slots = dict.fromkeys(range(len(cards)), 0)  # next free data port (offset) per card
    for index, inst in instances:
        where = [position[(s.node, s.card)] for s in inst.segments]
        listens = []
        for p in where:
            listens.append(listen_endpoint(owner, mode, group, p, cards[p], slots[p], pool))
            slots[p] += 1
        n = len(inst.segments)
        for i, (seg, p) in enumerate(zip(inst.segments, where)):
            hosted[p].append((segment_order(seg.layer_range, seg.slrs, seg.slr_layers), SegmentWiring(
                instance_id=f"{owner.namespace}/{owner.name}-{index}", instance=index, segment=i, segments=n,
                mode=mode, model=model, node=cards[p].node, card=cards[p].card, card_type=seg.card_type,
                slrs=seg.slrs, layer_range=seg.layer_range, layers=seg.layers,
                artifacts=Artifacts(onnx=onnx, onnx_sha256=digest),
                listen=listens[i], upstream=listens[i - 1] if i else gateway,
                downstream=listens[i + 1] if i + 1 < n else gateway)))
    return [CardWiring(node=c.node, card=c.card, card_type=c.card_type, mode=mode, build=c.build,
                       segments=[w for _, w in sorted(hosted[p], key=lambda kw: kw[0])])
            for p, c in enumerate(cards) if hosted[p]]


def group_configmap(owner: Owner, group: int, cards: list[CardWiring], record: dict, fps: float,
                    cost_per_hour: float) -> dict:
    """The group record: the cards it holds (written before its pods), every card's wiring, and
    `group.json` (its instances and builds)."""
    held = [{"node": c.node, "card": c.card, "type": c.card_type} for c in cards]
    data = {card_wiring_key(p): c.model_dump_json() for p, c in enumerate(cards)}
    data["group.json"] = json.dumps(record, sort_keys=True)
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(owner, group_configmap_name(owner.name, group), labels(owner.name, "group", group),
                          {ANNOTATION_CARDS: json.dumps(held), ANNOTATION_FPS: f"{fps:.3f}",
                           ANNOTATION_COST: f"{cost_per_hour:.4f}"}),
        "data": data,
    }


def cards_of(configmap: dict) -> list[dict]:
    """The cards a group ConfigMap reserves: [{node, card, type}]."""
    return json.loads((configmap["metadata"].get("annotations") or {}).get(ANNOTATION_CARDS, "[]"))


def card_wirings_of(configmap: dict) -> list[CardWiring]:
    data = configmap.get("data") or {}
    keys = sorted((k for k in data if k.startswith("card-")), key=lambda k: int(k[5:-5]))
    return [CardWiring.model_validate_json(data[k]) for k in keys]


def record_of(configmap: dict) -> dict:
    return json.loads((configmap.get("data") or {}).get("group.json", "{}"))


def idle_since(configmap: dict) -> float | None:
    raw = (configmap["metadata"].get("annotations") or {}).get(ANNOTATION_IDLE_SINCE)
    return float(raw) if raw else None


def model_fetch_mounts(spec: ElasticInferenceSpec, fetch: PodFetch) -> tuple[dict, list[dict], list[dict]]:
    """(env, volumes, volume mounts) a card pod needs to fetch spec.model.artifacts with the shared policy."""
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


def card_pod(owner: Owner, spec: ElasticInferenceSpec, group: int, position: int, card: CardWiring,
             catalog: Catalog, xclbin: str | None = None, fetch: PodFetch = PodFetch(),
             pull: BuildPull = BuildPull()) -> dict:
    """The pod of one card: holds exactly that card's device-plugin resource and runs its build (pulled by an
    init container when the wiring names a build artifact)."""
    resource = catalog.card(card.card_type).device_plugin_resource
    image = spec.runtime.image if spec.runtime else DEFAULT_SEGMENT_IMAGE
    name = card_pod_name(owner.name, group, position)
    fetch_env, fetch_volumes, fetch_mounts = model_fetch_mounts(spec, fetch)
    init_containers, build_volumes, build_mounts = build_pull(card, image, pull)
    env = {"ELASTICDF_WIRING": f"{WIRING_DIR}/{card_wiring_key(position)}", "ELASTICDF_MODE": card.mode,
           "ELASTICDF_CARD": str(card.card), "ELASTICDF_BUILD": card.build, **fetch_env}
    if xclbin:
        env["ELASTICDF_XCLBIN"] = xclbin
    ports = [{"name": f"data-{i}", "containerPort": w.listen.port} for i, w in enumerate(card.segments)]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": _meta(owner, name, labels(owner.name, "card", group, position),
                          {ANNOTATION_CARD: f"{card.node}/{card.card}"}),
        "spec": {
            "hostname": name,
            "subdomain": cards_service(owner.name),
            "restartPolicy": "Always",
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [card.node]}]}]}}},
            **({"initContainers": init_containers} if init_containers else {}),
            "containers": [{
                "name": "segments", "image": image,
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "ports": ports + [{"name": "health", "containerPort": HEALTH_PORT}],
                "resources": {"limits": {resource: "1"}, "requests": {resource: "1"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}, "periodSeconds": 5},
                "volumeMounts": [{"name": "wiring", "mountPath": WIRING_DIR, "readOnly": True}, *fetch_mounts,
                                 *build_mounts],
            }],
            "volumes": [{"name": "wiring", "configMap": {"name": group_configmap_name(owner.name, group)}},
                        *fetch_volumes, *build_volumes],
        },
    }


def cards_headless_service(owner: Owner) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(owner, cards_service(owner.name), labels(owner.name, "cards")),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {LABEL_NAME: label_value(owner.name), LABEL_ROLE: "card"},
                 "ports": [{"name": "data", "port": DATA_PORT}]},
    }


def autoscale_configmap(owner: Owner, history: str) -> dict:
    """The autoscaler's recommendation history (`autoscale.History` JSON), applied when it changes."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(owner, autoscale_configmap_name(owner.name), labels(owner.name, "autoscale")),
            "data": {AUTOSCALE_HISTORY_KEY: history}}


def gateway_selector(owner: str) -> dict:
    return {LABEL_GATEWAY: label_value(owner), LABEL_ROLE: "gateway"}


def gateway_service_object(owner: Owner) -> dict:
    """Where clients and the last segments reach the gateway pods (GATEWAY_PORT: REST and results;
    GATEWAY_GRPC_PORT: gRPC)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(owner, gateway_service(owner.name), labels(owner.name, "gateway")),
        "spec": {"selector": gateway_selector(owner.name),
                 "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"},
                           {"name": "grpc", "port": GATEWAY_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"}]},
    }


def gateway_configmap(owner: Owner, active: list[SegmentWiring]) -> dict:
    """The active instances' segment wiring (`instance-<i>-segment-<s>.json`), mounted by the gateway.

    Only active instances are in it: standby instances stay flashed on their cards but out of the gateway's
    rotation, and activating one is an update of this ConfigMap (no pod is created, nothing re-flashed). The
    kubelet updates a mounted ConfigMap in place and the gateway re-reads it when its content changes."""
    data = {gateway_wiring_key(w.instance, w.segment): w.model_dump_json() for w in active}
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(owner, gateway_configmap_name(owner.name), labels(owner.name, "gateway")),
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
        "metadata": _meta(owner, gateway_name(owner.name), labels(owner.name, "gateway")),
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
                                 "--reload-seconds=0.2"],
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


def gateway_objects(owner: Owner, spec: ElasticInferenceSpec, active: list[SegmentWiring]) -> list[dict]:
    """What the gateway needs, in apply order: its wiring first, so the pod mounts a complete one."""
    return [gateway_configmap(owner, active), gateway_service_object(owner),
            gateway_deployment(owner, spec)]


def model_uri(spec: ElasticInferenceSpec) -> str:
    return spec.model.artifacts.onnx if spec.model.artifacts else zoo_uri(spec.model.name)


def build_job(record: BuildRecord, spec: ElasticInferenceSpec, mode: str, attempt: int, builds: BuildSettings,
              fetch: PodFetch = PodFetch()) -> dict:
    """The builder Job of one card build (operator namespace; shared by every resource needing the digest).

    Steps (init containers run in order, each only after the previous one exited 0): `bundle` turns the record
    (env RECORD_ENV) and the model into a FINN build directory at BUNDLE_DIR; `build` turns it into the artifact
    at OUT_DIR (emulation: our builder; xrt: the user's FINN + Vivado image, builds.xrtImage); the container
    `push` stores it in the registry under build_tag(digest)."""
    ours = builds.builder_image or (spec.runtime.image if spec.runtime else DEFAULT_SEGMENT_IMAGE)
    fetch_env, fetch_volumes, fetch_mounts = model_fetch_mounts(spec, fetch)
    work = [{"name": "bundle", "mountPath": BUNDLE_DIR}, {"name": "out", "mountPath": OUT_DIR}]
    model = []  # a zoo model: the record names it
    if spec.model.artifacts:
        model = ["--model", spec.model.artifacts.onnx]
        model += ["--sha256", spec.model.artifacts.sha256] if spec.model.artifacts.sha256 else []
    bundle = {"name": "bundle", "image": ours, "command": ["elasticdf", "build", "bundle", *model, "-o", BUNDLE_DIR],
              "env": _env({RECORD_ENV: record.model_dump_json(by_alias=True), **fetch_env}),
              "volumeMounts": work + fetch_mounts}
    volumes = [{"name": "bundle", "emptyDir": {}}, {"name": "out", "emptyDir": {}}, *fetch_volumes]
    build = _build_step(mode, ours, builds, volumes)
    if mode != "xrt":  # our builder reads the model again: from the cache the bundle step filled
        build |= {"env": _env(fetch_env), "volumeMounts": build["volumeMounts"] + fetch_mounts}
    push_command = ["elasticdf", "build", "push", OUT_DIR, "--registry", builds.registry]
    push_command += ["--insecure"] if builds.insecure else []
    push = {"name": "push", "image": ours, "command": push_command, "volumeMounts": list(work)}
    if builds.pull_secret:
        volumes.append({"name": "registry-auth", "secret": {"secretName": builds.pull_secret, "items": [
            {"key": ".dockerconfigjson", "path": "config.json"}]}})
        push["volumeMounts"].append({"name": "registry-auth", "mountPath": PULL_SECRET_DIR, "readOnly": True})
        push["command"] += ["--docker-config", f"{PULL_SECRET_DIR}/config.json"]
    pod = {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
           "initContainers": [bundle, build], "containers": [push], "volumes": volumes}
    if builds.node_selector:
        pod["nodeSelector"] = dict(builds.node_selector)
    tag = build_tag(record.digest)
    labels_ = {LABEL_BUILD: tag, LABEL_ROLE: "build", LABEL_MANAGED: MANAGER}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": build_job_name(record.digest, attempt), "namespace": builds.namespace,
                     "labels": labels_, "annotations": {ANNOTATION_BUILD_ATTEMPT: str(attempt),
                                                        f"{LABEL_BUILD}-digest": record.digest}},
        "spec": {"backoffLimit": builds.backoff_limit, "activeDeadlineSeconds": builds.timeout_seconds,
                 "ttlSecondsAfterFinished": 7 * 24 * 3600,  # failed Jobs count the attempts; keep them a week
                 "template": {"metadata": {"labels": labels_}, "spec": pod}},
    }


def _build_step(mode: str, ours: str, builds: BuildSettings, volumes: list[dict]) -> dict:
    """Emulation: our builder makes the runnable per-card ONNX; xrt: the user's FINN + Vivado image (bundle at
    BUNDLE_DIR, expected to write OUT_DIR/card.xclbin and report.json), with the chart's resources and license."""
    work = [{"name": "bundle", "mountPath": BUNDLE_DIR}, {"name": "out", "mountPath": OUT_DIR}]
    if mode != "xrt":
        return {"name": "build", "image": ours, "command": ["elasticdf", "build", "run", BUNDLE_DIR, "-o", OUT_DIR],
                "volumeMounts": work}
    step = {"name": "build", "image": builds.xrt_image, "volumeMounts": work,
            "env": _env({"ELASTICDF_BUNDLE": BUNDLE_DIR, "ELASTICDF_OUT": OUT_DIR}),
            "resources": json.loads(builds.resources)}
    if builds.xrt_command:
        step["command"] = list(builds.xrt_command)
    if builds.license_secret:
        volumes.append({"name": "license", "secret": {"secretName": builds.license_secret}})
        step["volumeMounts"].append({"name": "license", "mountPath": LICENSE_DIR, "readOnly": True})
    return step


def _env(values: dict[str, str]) -> list[dict]:
    return [{"name": k, "value": v} for k, v in values.items()]
