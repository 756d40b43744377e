"""The operator's inference gateway: pure builders (Deployment, wiring ConfigMap, Service), the apply step
of reconcile, status.endpoint, and that the gateway program reads exactly what the operator mounts."""

from __future__ import annotations

from pathlib import Path

from elasticdf_contract.wiring import check_chain
from elasticdf_gateway.__main__ import load_wirings
from elasticdf_gateway.pipeline import Pipeline
from elasticdf_operator import builders, state
from elasticdf_operator.act import execute
from elasticdf_operator.api import DEFAULT_GATEWAY_IMAGE, DEFAULT_SEGMENT_IMAGE, ElasticInferenceSpec
from elasticdf_operator.builders import Owner
from elasticdf_operator.decide import Apply, Decision
from elasticdf_operator.status import build_status
from elasticdf_partitioner.plan import Instance, Segment

OWNER = Owner("net", "ns", "uid-1")
SPEC = ElasticInferenceSpec.model_validate({"model": {"name": "cnv"}})


def instance(nodes: tuple[str, ...]) -> Instance:
    seg = dict(slrs=[0], ingress_gbps=1, egress_gbps=1, resources={}, utilisation={}, slr_layers={})
    return Instance(fps=100, fclk_mhz=200, cycles_per_frame=1, latency_ms=1, segments=[
        Segment(node=n, card=0, card_type="u280", layers=[f"l{i}", f"l{i}"], layer_range=[i, i], **seg)
        for i, n in enumerate(nodes)])


def active_wirings(count: int, segments: int = 2) -> list:
    """The segment wirings of `count` active instances, each on its own cards."""
    out = []
    for index in range(count):
        nodes = tuple(f"n{index}-{s}" for s in range(segments))
        places = [builders.CardPlace(n, 0, "u280", 0, "sha256:b") for n in nodes]
        cards = builders.group_wiring(OWNER, SPEC, index, "emulation", places, [(index, instance(nodes))],
                                      {(n, 0): p for p, n in enumerate(nodes)})
        out += [w for c in cards for w in c.segments]
    return out


def pod_spec(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]


def test_deployment_identity_labels_and_owner():
    dep = builders.gateway_deployment(OWNER, SPEC)
    meta = dep["metadata"]
    assert (dep["apiVersion"], dep["kind"], meta["name"], meta["namespace"]) == ("apps/v1", "Deployment",
                                                                                  "net-gateway", "ns")
    assert meta["labels"][builders.LABEL_NAME] == "net" and meta["labels"][builders.LABEL_ROLE] == "gateway"
    assert meta["ownerReferences"] == [OWNER.reference()]
    template = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= template.items()
    # not a segment pod: the segment indexes, selectors and card bookkeeping key on these labels
    assert builders.LABEL_NAME not in template and builders.LABEL_MANAGED not in template
    assert builders.LABEL_GROUP not in template
    assert "replicas" not in dep["spec"], "left to whoever scales the gateway (kept at 1 when created)"


def test_service_selects_the_gateway_pods_on_the_port_results_go_to():
    dep = builders.gateway_deployment(OWNER, SPEC)
    svc = builders.gateway_service_object(OWNER)
    assert svc["metadata"]["name"] == builders.gateway_service("net")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod_spec(dep)["containers"]
    http, grpc = container["ports"]
    assert svc["spec"]["ports"][0]["port"] == http["containerPort"] == builders.GATEWAY_PORT
    assert svc["spec"]["ports"][0]["targetPort"] == http["name"]
    # the protocol's gRPC endpoint next to REST, on the port the gateway is told to serve it on
    assert svc["spec"]["ports"][1]["port"] == grpc["containerPort"] == builders.GATEWAY_GRPC_PORT
    assert svc["spec"]["ports"][1]["targetPort"] == grpc["name"]
    assert f"--grpc-port={builders.GATEWAY_GRPC_PORT}" in container["args"]
    # every instance's first segment receives from, and its last sends to, exactly this Service and port
    ws = active_wirings(1)
    for end in (ws[0].upstream, ws[-1].downstream):
        assert end.kind == "gateway" and end.port == builders.GATEWAY_PORT
        assert end.host == f"{svc['metadata']['name']}.ns.svc"


def test_pod_runs_hardened_with_probe_resources_and_the_mounted_wiring():
    spec = pod_spec(builders.gateway_deployment(OWNER, SPEC))
    (c,) = spec["containers"]
    assert c["image"] == DEFAULT_GATEWAY_IMAGE
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False
    assert set(c["resources"]) == {"requests", "limits"}
    assert not any(k.startswith("amd.com/") or k.startswith("xilinx.com/") for k in c["resources"]["limits"])
    (vol,) = spec["volumes"]
    (mount,) = c["volumeMounts"]
    assert vol["configMap"]["name"] == builders.gateway_configmap_name("net") == "net-gateway-wiring"
    assert mount["name"] == vol["name"] and mount["readOnly"]
    assert f"--wiring={mount['mountPath']}" in c["args"]
    assert "--model=cnv" in c["args"] and f"--port={builders.GATEWAY_PORT}" in c["args"]
    assert f"--segment-health-port={builders.HEALTH_PORT}" in c["args"]


def test_gateway_image_from_the_spec():
    spec = ElasticInferenceSpec.model_validate({"model": {"name": "cnv"},
                                                "runtime": {"gatewayImage": "registry.local/gw:1.2"}})
    assert spec.runtime.image == DEFAULT_SEGMENT_IMAGE, "the segment image keeps its default"
    (c,) = pod_spec(builders.gateway_deployment(OWNER, spec))["containers"]
    assert c["image"] == "registry.local/gw:1.2"


def test_gateway_runs_where_the_placement_node_selector_allows():
    assert "nodeSelector" not in pod_spec(builders.gateway_deployment(OWNER, SPEC))
    spec = ElasticInferenceSpec.model_validate({"model": {"name": "cnv"},
                                                "placement": {"nodeSelector": {"elasticdf.io/dev-runtime": "real"}}})
    assert pod_spec(builders.gateway_deployment(OWNER, spec))["nodeSelector"] == {"elasticdf.io/dev-runtime": "real"}


def test_wiring_configmap_holds_the_active_instances_and_the_gateway_reads_it(tmp_path: Path):
    cm = builders.gateway_configmap(OWNER, active_wirings(3))
    assert cm["metadata"]["ownerReferences"] == [OWNER.reference()]
    assert builders.LABEL_GROUP not in cm["metadata"]["labels"], "not a group record (no cards)"
    assert sorted(cm["data"]) == [f"instance-{i}-segment-{s}.json" for i in range(3) for s in range(2)]
    for key, value in cm["data"].items():
        (tmp_path / key).write_text(value)
    pipeline = Pipeline(load_wirings([str(tmp_path)]))
    assert [i.id for i in pipeline.instances] == [f"ns/net-{i}" for i in range(3)]
    for inst in pipeline.instances:
        assert check_chain(inst.wirings) == []


def test_scaled_to_zero_the_wiring_is_empty_and_the_deployment_stays():
    assert builders.gateway_configmap(OWNER, [])["data"] == {}
    kinds = [o["kind"] for o in builders.gateway_objects(OWNER, SPEC, [])]
    assert kinds == ["ConfigMap", "Service", "Deployment"], "wiring first: the pod mounts a complete one"


class RecordingKube:
    def __init__(self):
        self.applied: list[dict] = []
        self.annotated: list[str] = []

    def apply(self, obj: dict) -> None:
        self.applied.append(obj)

    def annotate_gateway_pods(self, namespace: str, owner: str, digest: str) -> None:
        self.annotated.append(digest)


def applied(kube, ledger, count) -> int:
    before = len(kube.applied)
    execute(kube, ledger, OWNER, [Apply(o) for o in builders.gateway_objects(OWNER, SPEC, active_wirings(count))])
    return len(kube.applied) - before


def test_apply_only_what_changed_and_reassert_now_and_then():
    now = [0.0]
    ledger = state.Ledger(clock=lambda: now[0])
    kube = RecordingKube()
    assert applied(kube, ledger, 1) == 3
    assert applied(kube, ledger, 1) == 0, "unchanged: no API call"
    assert applied(kube, ledger, 2) == 1, "scaled: only the wiring"
    assert kube.applied[-1]["kind"] == "ConfigMap" and len(kube.applied[-1]["data"]) == 4
    assert len(kube.annotated) == 2 and kube.annotated[0] != kube.annotated[1], "gateway pods told of each change"
    now[0] += state.REAPPLY_SECONDS + 1
    assert applied(kube, ledger, 2) == 3, "re-asserted (repairs deletions)"
    ledger.forget_applied("ns", ["net-gateway-wiring"])  # e.g. the resource was deleted and is back
    assert applied(kube, ledger, 2) == 1


def test_status_names_the_endpoint():
    ei = {"metadata": {"name": "net", "namespace": "ns", "generation": 1}, "spec": {"model": {"name": "cnv"}}}
    status = build_status(ei, OWNER, 0, [], [], Decision(), {"name": "cnv"})
    assert status.endpoint == "http://net-gateway.ns.svc:8000/v2/models/cnv"
    assert status.grpc_endpoint == "net-gateway.ns.svc:8001"


class GatewayPods:
    """The operator's view of two gateway pods (as `Kube.gateway_pods` lists them) and their /metrics."""

    def __init__(self, metrics_by_ip: dict[str, str], not_ready: tuple[str, ...] = ()):
        self.metrics, self.not_ready = metrics_by_ip, not_ready

    def gateway_pods(self, namespace: str, owner: str) -> list[dict]:
        return [{"metadata": {"name": f"gw-{ip}"}, "status": {
            "phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": "False" if ip in self.not_ready else "True"}]}}
            for ip in self.metrics]

    def get(self, url: str, timeout: float) -> str:
        ip = url.split("//")[1].split(":")[0]
        if self.metrics[ip] is None:
            raise OSError("connection refused")
        return self.metrics[ip]


def test_the_operator_waits_for_gateways_that_still_drain_an_instance():
    from elasticdf_gateway.service import GatewayMetrics
    from elasticdf_operator.act import gateways_holding
    from prometheus_client import generate_latest

    def exposition(pipeline: Pipeline) -> str:
        return generate_latest(GatewayMetrics("cnv", pipeline).registry).decode()

    draining, done = Pipeline(active_wirings(2)), Pipeline(active_wirings(2))
    draining.instances[1].inflight = 1  # a batch still in flight to instance 1 when the wiring drops it
    for p in (draining, done):
        p.update(active_wirings(1))
    assert [i for i, _ in done.held()] == ["ns/net-0"] and ("ns/net-1", "draining") in draining.held()
    pods = GatewayPods({"10.0.0.1": exposition(done), "10.0.0.2": exposition(draining)})
    assert gateways_holding(pods, OWNER, {"ns/net-1"}, get=pods.get) == ["gw-10.0.0.2 holds ns/net-1"]
    pods.metrics["10.0.0.2"] = exposition(done)
    assert gateways_holding(pods, OWNER, {"ns/net-1"}, get=pods.get) == []
    pods.metrics["10.0.0.2"] = None
    assert gateways_holding(pods, OWNER, {"ns/net-1"}, get=pods.get) == [
        "gw-10.0.0.2: not answering (connection refused)"], "a gateway that cannot say keeps the cards"


def test_an_instance_is_served_once_every_gateway_has_it_in_rotation():
    """gateways_serving: the instances every Ready gateway pod serves (real gateway pipelines' /metrics); a
    gateway that cannot be asked leaves no view (None: the card pods' readiness stands for it)."""
    from elasticdf_gateway.service import GatewayMetrics
    from elasticdf_operator.act import gateways_serving
    from prometheus_client import generate_latest

    def exposition(pipeline: Pipeline) -> str:
        return generate_latest(GatewayMetrics("cnv", pipeline).registry).decode()

    both, first = Pipeline(active_wirings(2)), Pipeline(active_wirings(2))
    for inst in both.instances + first.instances[:1]:
        inst.up = True
    pods = GatewayPods({"10.0.0.1": exposition(both), "10.0.0.2": exposition(first)})
    assert gateways_serving(pods, OWNER, get=pods.get) == {"ns/net-0"}, "instance 1 is down in one gateway"
    pods.metrics["10.0.0.2"] = exposition(both)
    assert gateways_serving(pods, OWNER, get=pods.get) == {"ns/net-0", "ns/net-1"}
    pods.metrics["10.0.0.2"] = None
    assert gateways_serving(pods, OWNER, get=pods.get) is None
    assert gateways_serving(GatewayPods({}), OWNER, get=pods.get) == set(), "no gateway runs: none is served"
    starting = GatewayPods({"10.0.0.1": exposition(both), "10.0.0.2": exposition(Pipeline(active_wirings(2)))},
                           not_ready=("10.0.0.2",))
    assert gateways_serving(starting, OWNER, get=starting.get) == {"ns/net-0", "ns/net-1"}, \
        "a gateway pod not Ready yet gets no requests from the Service: it does not count"
