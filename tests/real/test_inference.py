"""The product end to end on a real node: the operator (installed by the Helm chart, running in the cluster)
places an ElasticInference, its segment and gateway pods really run our images, and Open Inference Protocol
requests through the gateway Service return exactly the unsplit model's outputs, also while a segment pod is
deleted, while the resource scales 1 -> 2 -> 1 (inside one card) and beyond the card and back (a second card pod
placed and released), and while the operator pod is killed.

Requests go through `kubectl port-forward svc/<name>-gateway` (API server -> kubelet -> the gateway pod); the
gateway reaches the segments by their pod DNS names and the last segment returns results to the gateway
Service. Every request of the background traffic gets exactly one outcome (right answer, or an error); the
gateway's own request counters must account for exactly those requests (nothing answered twice, nothing lost).
Tests use labels and observable state (Ready, answers, pod uids), not the operator's pod names."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import devcluster
import numpy as np
import oip_client
import pytest
from kube_helpers import fresh_namespace, wait_until

MODEL = "cnv"  # emulates at ~90 frames/s per core: fast enough for a 2-core machine
GROUP, VERSION, PLURAL = "elasticdf.io", "v1alpha1", "elasticinferences"
SEGMENTS = f"elasticdf.io/name={MODEL},elasticdf.io/role=card"  # the card pods running the segments
GATEWAY = f"elasticdf.io/gateway={MODEL}"
KUBECTL = Path(sys.executable).parent / "kubectl"
FORWARD = "port-forward-inference"
OPERATOR = "app.kubernetes.io/component=operator"  # the chart's operator pod


@dataclass
class Served:
    cluster: object
    namespace: str
    client: oip_client.Client
    grpc_url: str
    inputs: list[np.ndarray]
    expected: list[np.ndarray]

    def kubectl(self, *args: str) -> str:
        res = subprocess.run([str(KUBECTL), f"--kubeconfig={self.cluster.kubeconfig}", "-n", self.namespace, *args],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
        return res.stdout

    def traffic(self) -> oip_client.Traffic:
        """Two clients sending requests through the gateway (start() it)."""
        return oip_client.Traffic(self.client.url, MODEL, self.inputs, self.expected, workers=2)

    @property
    def instance_id(self) -> str:  # how the gateway names instance i: f"{instance_id}-{i}"
        return f"{self.namespace}/{MODEL}"


@pytest.fixture(scope="module")
def apis(real_cluster):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(real_cluster.kubeconfig))
    yield client.CustomObjectsApi(api_client), client.AppsV1Api(api_client)
    api_client.close()


def ei(custom, ns: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, MODEL)


def ready_replicas(custom, ns: str, want: int) -> bool:
    obj = ei(custom, ns)
    status = obj.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    return ready and status.get("readyReplicas") == status.get("replicas") == want == obj["spec"]["replicas"]


def pods(core_v1, ns: str, selector: str) -> list:
    return [p for p in core_v1.list_namespaced_pod(ns, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]


def running(core_v1, ns: str, selector: str) -> list:
    """Pods whose container started (kubectl logs answers for them)."""
    return [p for p in pods(core_v1, ns, selector) if p.status.phase == "Running"]


def pod_ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def ready_pods(core_v1, ns: str, selector: str) -> list:
    return [p for p in pods(core_v1, ns, selector) if pod_ready(p)]


@pytest.fixture(scope="module")
def served(real_cluster, operator, core_v1, apis):
    custom, _ = apis
    namespaces = fresh_namespace(core_v1, "serve")
    ns = next(namespaces)
    try:  # the namespace goes when the module ends, set up or not: its card pods hold cards
        started = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "metadata": {"name": MODEL},
            "spec": {"model": {"name": MODEL}, "replicas": 1, "runtime": {"mode": "emulation"},
                     "placement": {"nodeSelector": {devcluster.LABEL_DEV_RUNTIME: "real"}}}})
        wait_until(lambda: ready_replicas(custom, ns, 1), 300, f"{MODEL} Ready with 1 instance", interval=1)
        wait_until(lambda: ready_pods(core_v1, ns, GATEWAY), 120, "the gateway pod Ready", interval=1)
        print(f"apply -> Ready (segment and gateway pods serving): {time.monotonic() - started:.1f}s")
        ports = devcluster.port_forward(real_cluster.state_dir, real_cluster.kubeconfig, ns, f"svc/{MODEL}-gateway",
                                        [8000, 8001], name=FORWARD, tie_to_parent=True)
        inputs, expected = oip_client.reference(MODEL, 8)
        client = oip_client.Client(f"127.0.0.1:{ports[8000]}", MODEL)
        yield Served(real_cluster, ns, client, f"127.0.0.1:{ports[8001]}", inputs, expected)
        client.close()
        devcluster.stop_process(real_cluster.state_dir, FORWARD)
    finally:
        next(namespaces, None)  # deletes the namespace


def metrics_of(served: Served, pod: str, port: int) -> str:
    """A pod's /metrics, read inside it (every image has python; no shell, no curl)."""
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())"
    return served.kubectl("exec", pod, "--", "python", "-c", code)


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of metric `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def gateway_requests(served: Served, core_v1) -> Counter:
    """The gateway's request counter by status code (elasticdf_gateway_requests_total)."""
    (gw,) = ready_pods(core_v1, served.namespace, GATEWAY)
    text = metrics_of(served, gw.metadata.name, 8000)
    counts = Counter()
    for code, value in re.findall(r'^elasticdf_gateway_requests_total\{[^}]*code="(\d+)"[^}]*\} (\S+)$', text, re.M):
        counts[code] += int(float(value))
    return counts


def check_accounting(outcomes: list[oip_client.Outcome], before: Counter, after: Counter, instance_id: str) -> None:
    """Every request got exactly one outcome, no answer was wrong, every failure names the failed instance, and the
    gateway counted exactly these requests: none answered twice, none lost."""
    assert sorted(o.request for o in outcomes) == list(range(len(outcomes))), "one outcome per request"
    wrong = [o for o in outcomes if not o.correct and not o.error]
    assert wrong == [], f"{len(wrong)} answers differ from the unsplit model's"
    failed = [o for o in outcomes if o.error]
    unnamed = [o.error for o in failed if not re.search(rf"{re.escape(instance_id)}-\d+", o.error)]
    assert unnamed == [], f"errors that do not name the instance: {unnamed[:3]}"
    delta = after - before
    assert delta["200"] == sum(o.correct for o in outcomes), f"gateway counted {dict(delta)} for our requests"
    assert sum(delta.values()) - delta["200"] == len(failed), f"gateway counted {dict(delta)}; {len(failed)} failed"


def until_healthy(traffic: oip_client.Traffic, count: int, timeout: float) -> None:
    """Wait until `count` requests in a row were answered right (traffic recovered)."""
    wait_until(lambda: traffic.recovered(count), timeout, f"{count} right answers in a row", interval=0.5)


def test_answers_are_exactly_the_unsplit_models(served):
    import tritonclient.grpc as tgrpc

    for frame, want in zip(served.inputs, served.expected, strict=True):
        assert np.array_equal(served.client.infer(frame), want)
    # several frames in one request (the gateway batches them through the pipeline)
    batch = np.concatenate(served.inputs[:3])
    assert np.array_equal(served.client.infer(batch), np.concatenate(served.expected[:3]))
    # the protocol's gRPC endpoint through the same Service
    grpc = tgrpc.InferenceServerClient(served.grpc_url)
    try:
        meta = grpc.get_model_metadata(MODEL, as_json=True)
        inp = tgrpc.InferInput(meta["inputs"][0]["name"], list(served.inputs[0].shape), meta["inputs"][0]["datatype"])
        inp.set_data_from_numpy(served.inputs[0])
        out = grpc.infer(MODEL, [inp]).as_numpy(meta["outputs"][0]["name"])
    finally:
        grpc.close()
    assert np.array_equal(out, served.expected[0])


def test_segment_runs_as_non_root_and_logs_its_card(served, core_v1):
    (pod,) = pods(core_v1, served.namespace, SEGMENTS)
    name = pod.metadata.name
    log = served.kubectl("logs", name)
    match = re.search(r"card index=(\d+) bdf=(\S+) type=(\w+)", log)
    assert match, f"no card line in the segment's log:\n{log[-2000:]}"
    index, bdf, card_type = match.groups()
    assert card_type == "u280" and bdf == f"0000:{0x81 + int(index):02x}:00.1", "what the device plugin handed it"
    env = served.kubectl("exec", name, "--", "python", "-c", "import os; print(os.environ['ELASTICDF_CARD_INDEX'])")
    assert env.strip() == index
    metrics = metrics_of(served, name, 8080)
    assert sample(metrics, "elasticdf_segment_card_info", card_index=index, card_bdf=bdf, card_type="u280") == 1
    uid = served.kubectl("exec", name, "--", "python", "-c", "import os; print(os.getuid())")
    assert uid.strip() == "10001", "the image's non-root user"


def test_segment_pod_deleted_under_traffic(served, core_v1):
    before = gateway_requests(served, core_v1)
    (old,) = ready_pods(core_v1, served.namespace, SEGMENTS)
    traffic = served.traffic().start()
    try:
        until_healthy(traffic, 10, 60)
        core_v1.delete_namespaced_pod(old.metadata.name, served.namespace)
        wait_until(lambda: [p for p in ready_pods(core_v1, served.namespace, SEGMENTS)
                            if p.metadata.uid != old.metadata.uid], 180, "a new segment pod Ready", interval=0.5)
        until_healthy(traffic, 20, 120)
    finally:
        outcomes = traffic.stop()
    failed = [o for o in outcomes if o.error]
    print(f"{len(outcomes)} requests, {len(failed)} failed while the segment was away; first: "
          f"{failed[0].error if failed else '-'}")
    assert failed, "requests sent while the instance's only segment was gone must fail, not hang or vanish"
    check_accounting(outcomes, before, gateway_requests(served, core_v1), served.instance_id)


def scale_and_back(served: Served, core_v1, custom, replicas: int) -> None:
    """Scale to `replicas` and back to 1 under traffic: every request is answered right, none fails (the operator
    takes instances out of the gateway's wiring first and releases a card pod only once the gateway drained it)."""
    before = gateway_requests(served, core_v1)
    traffic = served.traffic().start()
    try:
        until_healthy(traffic, 10, 60)
        served.kubectl("scale", f"ei/{MODEL}", f"--replicas={replicas}")
        wait_until(lambda: ready_replicas(custom, served.namespace, replicas), 180, f"{replicas} instances Ready",
                   interval=1)
        # the gateway picks up the new instances from its mounted wiring and sends them frames
        wait_until(lambda: all(sample(metrics_of(served, p.metadata.name, 8080), "elasticdf_segment_frames_total") > 0
                               for p in ready_pods(core_v1, served.namespace, SEGMENTS)),
                   120, "every card pod serving", interval=2)
        card_pods = len(ready_pods(core_v1, served.namespace, SEGMENTS))
        scaled = time.monotonic()
        served.kubectl("scale", f"ei/{MODEL}", "--replicas=1")
        wait_until(lambda: ready_replicas(custom, served.namespace, 1)
                   and len(pods(core_v1, served.namespace, SEGMENTS)) == 1, 120, "back to 1 instance", interval=1)
        print(f"scale {replicas} -> 1 ({card_pods} card pods -> 1): {time.monotonic() - scaled:.1f} s (drain period "
              "5 s, then the operator asks the gateway)")
        until_healthy(traffic, 20, 120)
    finally:
        outcomes = traffic.stop()
    failed = [o for o in outcomes if o.error]
    print(f"{len(outcomes)} requests, {len(failed)} failed; first: {failed[0].error if failed else '-'}")
    assert failed == [], f"{len(failed)} requests failed while scaling; first: {failed[0].error}"
    check_accounting(outcomes, before, gateway_requests(served, core_v1), served.instance_id)


def test_scale_1_2_1_under_traffic(served, core_v1, apis):
    """Inside the placed card: the second instance is a standby of the same card pod; scaling back takes it out of
    the gateway's wiring and the gateway finishes what it had sent it."""
    scale_and_back(served, core_v1, apis[0], 2)


def test_scale_beyond_the_card_and_back_under_traffic(served, core_v1, apis):
    """One instance more than the first card holds: a second card pod, released after the gateway drained it."""
    held = len(ei(apis[0], served.namespace)["status"]["plan"]["instances"])
    scale_and_back(served, core_v1, apis[0], held + 1)


def test_operator_pod_killed_nothing_duplicated(served, core_v1, apis, operator):
    custom, apps = apis
    ns = served.namespace

    def owned() -> dict[str, set[str]]:
        cms = core_v1.list_namespaced_config_map(ns, label_selector=f"elasticdf.io/name={MODEL}").items
        return {"segment pods": {p.metadata.uid for p in pods(core_v1, ns, SEGMENTS)},
                "gateway pods": {p.metadata.uid for p in pods(core_v1, ns, GATEWAY)},
                "configmaps": {c.metadata.uid for c in cms},
                "services": {s.metadata.uid for s in core_v1.list_namespaced_service(ns).items},
                "deployments": {d.metadata.uid for d in apps.list_namespaced_deployment(ns).items}}

    wait_until(lambda: ready_replicas(custom, ns, 1), 60, "1 instance Ready")
    objects = owned()
    before = gateway_requests(served, core_v1)

    def resyncs(pod) -> int:
        return served.kubectl("logs", "-n", operator, pod.metadata.name).count("Timer 'resync' succeeded")

    # the operator that acts: the only replica, or with leader election the one holding the Lease (a standby
    # runs no handler, so it never resyncs)
    leader = next(p for p in running(core_v1, operator, OPERATOR) if resyncs(p))
    traffic = served.traffic().start()
    try:
        until_healthy(traffic, 10, 60)
        core_v1.delete_namespaced_pod(leader.metadata.name, operator, grace_period_seconds=0)  # SIGKILL
        # another operator (a new pod, or the standby once the dead leader's Lease expired) resumes the resource
        # and resyncs it (every 2 s, chart value resyncSeconds) a few times
        wait_until(lambda: any(resyncs(p) >= 3 for p in running(core_v1, operator, OPERATOR)
                               if p.metadata.uid != leader.metadata.uid), 180, "three resyncs by another operator",
                   interval=1)
        until_healthy(traffic, 20, 60)
    finally:
        outcomes = traffic.stop()
    assert owned() == objects, "the restarted operator created or replaced nothing"
    assert ready_replicas(custom, ns, 1)
    assert [o.error for o in outcomes if o.error] == [], "the data path does not depend on the operator"
    check_accounting(outcomes, before, gateway_requests(served, core_v1), served.instance_id)
