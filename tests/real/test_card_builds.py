"""Card builds end to end on a real node (issue 15): the operator (Helm chart, builds.registry = the dev cluster's
registry) turns the missing card build of an emulation ElasticInference into a builder Job that really runs on
the node (bundle -> build -> push), holds the group with BuildPending meanwhile, and once the artifact is in the
registry the card pod pulls it by digest (init container) and serves; the answers through the gateway are the
unsplit model's. The same model in another namespace starts no second build. A builder image that cannot build
ends in BuildFailed after the bounded re-creation. (Tampered artifacts refused before the segment starts:
tests/real/test_build_registry.py.)"""

from __future__ import annotations

import time

import devcluster
import numpy as np
import oip_client
import pytest
from elasticdf_contract.builds import BUILD_REPOSITORY, build_tag
from elasticdf_contract.names import LABEL_BUILD, label_value
from kube_helpers import wait_until

MODEL = "cnv"
GROUP, VERSION, PLURAL = "elasticdf.io", "v1alpha1", "elasticinferences"
ON_REAL_NODE = {"nodeSelector": {devcluster.LABEL_DEV_RUNTIME: "real"}}


def resource(model: str = MODEL, **runtime) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "metadata": {"name": model},
            "spec": {"model": {"name": model}, "replicas": 1, "runtime": {"mode": "emulation", **runtime},
                     "placement": ON_REAL_NODE}}


@pytest.fixture(scope="module")
def apis(real_cluster):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(real_cluster.kubeconfig))
    yield client.CustomObjectsApi(api_client), client.BatchV1Api(api_client)
    api_client.close()


def status(custom, ns: str, name: str = MODEL) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name).get("status") or {}


def scheduled(custom, ns: str, name: str = MODEL) -> dict:
    return next((c for c in status(custom, ns, name).get("conditions", []) if c["type"] == "Scheduled"), {})


def ready(custom, ns: str, name: str = MODEL) -> bool:
    st = status(custom, ns, name)
    return st.get("readyReplicas") == 1 and any(c["type"] == "Ready" and c["status"] == "True"
                                                for c in st.get("conditions", []))


def jobs(batch, ns: str, digest: str) -> list:
    return batch.list_namespaced_job(ns, label_selector=f"{LABEL_BUILD}={build_tag(digest)}").items


def answers_exactly(cluster, ns: str, forward: str) -> None:
    ports = devcluster.port_forward(cluster.state_dir, cluster.kubeconfig, ns, f"svc/{MODEL}-gateway", [8000],
                                    name=forward, tie_to_parent=True)
    client = oip_client.Client(f"127.0.0.1:{ports[8000]}", MODEL)
    try:
        # asked at once: Ready counts an instance once the gateways serve it, not when its card pods are Ready (a
        # CI run asked 1 s after that and got 503 "segment 0 ... is down": the gateway's check of the segment had
        # met DNS before the pod existed, and the negative answer was cached for a few seconds)
        inputs, expected = oip_client.reference(MODEL, 4)
        for frame, want in zip(inputs, expected, strict=True):
            assert np.array_equal(client.infer(frame), want)
    finally:
        client.close()
        devcluster.stop_process(cluster.state_dir, forward)


def test_builds_run_as_jobs_land_in_the_registry_and_card_pods_pull_and_serve(real_cluster, builds_operator,
                                                                             core_v1, apis, new_namespace):
    custom, batch = apis
    ns, other = new_namespace("build"), new_namespace("build")
    started = time.monotonic()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, resource())
    held = wait_until(lambda: scheduled(custom, ns).get("reason") == "BuildPending" and status(custom, ns)["builds"],
                      120, "held with BuildPending", interval=1)
    (build,) = held
    digest = build["digest"]
    assert digest in scheduled(custom, ns)["message"]
    steps = set()

    def progressed() -> bool:
        (b,) = status(custom, ns)["builds"]
        steps.add(b.get("progress"))
        return b["phase"] == "Ready"
    wait_until(progressed, 900, "the build in the registry", interval=1)
    print(f"apply -> build Ready: {time.monotonic() - started:.1f}s; steps seen {sorted(s for s in steps if s)}")
    # the push step has exited when the artifact is there; the Job controller counts it a moment later
    wait_until(lambda: [j.status.succeeded for j in jobs(batch, builds_operator, digest)] == [1], 60,
               "one builder Job, succeeded", interval=1)
    wait_until(lambda: ready(custom, ns), 300, "serving from the pulled build", interval=1)
    print(f"apply -> Ready: {time.monotonic() - started:.1f}s")
    (b,) = status(custom, ns)["builds"]
    assert b["artifact"].startswith(f"oci://{devcluster.BUILD_REGISTRY}/{BUILD_REPOSITORY}@sha256:")
    assert b["reportedClockMhz"] == b["fclkMhz"], "the emulation builder reports the modelled clock"
    assert b["reportedResources"]["LUT"] > 0 and not status(custom, ns)["plan"].get("resourceScale"), \
        "and the estimated resources: capacity stays as modelled"
    (pod,) = core_v1.list_namespaced_pod(ns, label_selector=f"elasticdf.io/name={label_value(MODEL)},"
                                                            "elasticdf.io/role=card").items
    assert [c.name for c in pod.spec.init_containers or []] == ["build"]
    assert b["artifact"] in pod.spec.init_containers[0].command
    answers_exactly(real_cluster, ns, "port-forward-build-1")

    custom.create_namespaced_custom_object(GROUP, VERSION, other, PLURAL, resource())
    wait_until(lambda: ready(custom, other), 300, "the second namespace serving", interval=1)
    assert [b["digest"] for b in status(custom, other)["builds"]] == [digest]
    assert len(jobs(batch, builds_operator, digest)) == 1, "no second build for the same digest"


def test_a_builder_that_cannot_build_ends_in_build_failed(real_cluster, builds_operator, core_v1, apis, probe_image,
                                                          new_namespace):
    """A builder image without `elasticdf` (the tier's scratch probe image, as spec.runtime.image: the builder
    image when builds.builderImage is unset): the first step cannot start; after one re-creation the build is
    Failed and the condition names the step."""
    custom, batch = apis
    ns = new_namespace("build")
    # a model whose build is not in the registry yet; one card per instance, so its group is one card, one build
    # (MobileNetV1's best group on the node's two U280s is the pair, with a build per card)
    body = resource("mobilenetv1", image=probe_image)
    body["spec"]["placement"] = {**ON_REAL_NODE, "maxSegmentsPerInstance": 1}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    failed = wait_until(lambda: scheduled(custom, ns, "mobilenetv1").get("reason") == "BuildFailed"
                        and scheduled(custom, ns, "mobilenetv1"), 600, "BuildFailed", interval=1)
    print(f"BuildFailed: {failed['message'][:300]}")
    (b,) = status(custom, ns, "mobilenetv1")["builds"]
    assert b["phase"] == "Failed" and b["attempts"] == 2 and "step bundle" in failed["message"]
    assert len(jobs(batch, builds_operator, b["digest"])) == 2
    assert not core_v1.list_namespaced_pod(ns, label_selector="elasticdf.io/role=card").items


def test_a_measured_clock_rolls_onto_new_builds_under_traffic_and_nothing_is_lost(real_cluster, builds_operator,
                                                                                   core_v1, apis, new_namespace):
    """The cluster changes so that a better plan exists (a Fabric says the U280s run at 250 MHz, as a build
    report would): the operator builds the new card build while the old group serves (prefer-existing), places
    the new group on the free card, moves the rotation over once it is ready and releases the old group after the
    gateway drained it. Every request sent meanwhile is answered, and answered right."""
    custom, batch = apis
    ns = new_namespace("roll")
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, resource())
    wait_until(lambda: ready(custom, ns), 900, "serving", interval=1)
    (old,) = status(custom, ns)["builds"]
    forward = "port-forward-roll"
    ports = devcluster.port_forward(real_cluster.state_dir, real_cluster.kubeconfig, ns, f"svc/{MODEL}-gateway",
                                    [8000], name=forward, tie_to_parent=True)
    inputs, expected = oip_client.reference(MODEL, 8)
    traffic = oip_client.Traffic(f"127.0.0.1:{ports[8000]}", MODEL, inputs, expected).start()
    fabric = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Fabric", "metadata": {"name": "measured-clocks"},
              "spec": {"clocks": {"u280": 250.0}}}
    started = time.monotonic()
    try:
        wait_until(lambda: traffic.recovered(10), 60, "traffic flowing")
        custom.create_cluster_custom_object(GROUP, VERSION, "fabrics", fabric)

        def rolled() -> bool:
            builds = status(custom, ns)["builds"]
            current = next((c for c in status(custom, ns)["conditions"] if c["type"] == "PlanCurrent"), {})
            return (current.get("status") == "True" and [b["fclkMhz"] for b in builds] == [250.0]
                    and ready(custom, ns) and builds[0])
        new = wait_until(rolled, 900, "rolled onto the 250 MHz build", interval=1)
        print(f"Fabric clock -> rolled: {time.monotonic() - started:.1f}s; build {old['digest'][:19]} -> "
              f"{new['digest'][:19]}")
        wait_until(lambda: traffic.recovered(20), 60, "traffic on the new group")
    finally:
        outcomes = traffic.stop()
        custom.delete_cluster_custom_object(GROUP, VERSION, "fabrics", "measured-clocks")
        devcluster.stop_process(real_cluster.state_dir, forward)
    failed = [o for o in outcomes if not o.correct]
    print(f"{len(outcomes)} requests during the roll, {len(failed)} failed; "
          f"first: {failed[0].error if failed else '-'}")
    assert not failed, f"{len(failed)} requests failed or were answered wrong during the roll"
    assert new["digest"] != old["digest"] and new["phase"] == "Ready"
    assert len(jobs(batch, builds_operator, new["digest"])) == 1
    predicted = status(custom, ns)["predictedFPS"]
    assert predicted > 0 and status(custom, ns)["plan"]["groups"][0]["cards"][0]["build"] == new["digest"]
