"""The dev cluster's card build registry (hack/devcluster.py build_registry_objects, issue 15) on the real node:
its Deployment serves, an artifact pushed through a port-forward is found by build_exists, a pod with the
operator's init container (builders.build_pull) pulls it by the Service's DNS name and verifies it, and after a
blob is changed on the registry's disk the same init container refuses it: the pod's main container never runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import devcluster
from elasticdf_contract.builds import BUILD_DIR, BuildRecord, BuildReport, segment_file
from elasticdf_contract.wiring import CardWiring, Endpoint, SegmentWiring
from elasticdf_operator import builders
from elasticdf_operator.api import DEFAULT_SEGMENT_IMAGE
from elasticdf_partitioner.artifacts import FetchPolicy
from elasticdf_partitioner.oci_builds import build_exists, build_reference, push_build

SEGMENT = b"segment graph bytes " * 2000
LIST_FILES = ("import hashlib, pathlib, sys\n"
              "for p in sorted(pathlib.Path(sys.argv[1]).iterdir()):\n"
              "    print(p.name, hashlib.sha256(p.read_bytes()).hexdigest())\n")


def write_artifact(out: Path) -> BuildRecord:
    segments = [{"layers": [0, 3], "slrs": [0], "floorplan": {}}]
    record = BuildRecord(digest=BuildRecord.content_digest("zoo:real-test", "u280", 200.0, segments, {}),
                         model="zoo:real-test", card_type="u280", fclk_mhz=200.0, segments=segments)
    out.mkdir()
    (out / "build.json").write_text(record.model_dump_json(by_alias=True))
    (out / "report.json").write_text(BuildReport(digest=record.digest, mode="emulation", clock_mhz=200.0,
                                                 clock_source="modelled", builder="tests/real",
                                                 seconds=0.0).model_dump_json(by_alias=True))
    (out / segment_file(0, 3)).write_bytes(SEGMENT)
    return record


def card_wired_with(record: BuildRecord, reference: str) -> CardWiring:
    gateway = Endpoint(kind="gateway", host="gw", port=9000)
    segment = SegmentWiring(instance_id="ns/net-0", instance=0, segment=0, segments=1, mode="emulation",
                            model="real-test", node="real-0", card=0, card_type="u280", slrs=[0],
                            layer_range=[0, 3], layers=["a", "d"], listen=Endpoint(kind="pod", host="p", port=7000),
                            upstream=gateway, downstream=gateway)
    segment.artifacts.build = reference
    return CardWiring(node="real-0", card=0, card_type="u280", mode="emulation", build=record.digest,
                      segments=[segment])


def puller(name: str, card: CardWiring) -> dict:
    """A pod whose init container is the card pod's (the operator's builder) and whose main container lists
    what it finds in BUILD_DIR."""
    init, volumes, mounts = builders.build_pull(card, DEFAULT_SEGMENT_IMAGE, builders.BuildPull(insecure=True))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeSelector": {devcluster.LABEL_DEV_RUNTIME: "real"}, "restartPolicy": "Never",
                     "terminationGracePeriodSeconds": 2, "initContainers": init, "volumes": volumes,
                     "containers": [{"name": "main", "image": DEFAULT_SEGMENT_IMAGE,
                                     "command": ["python", "-c", LIST_FILES, BUILD_DIR], "volumeMounts": mounts}]}}


def finished(core_v1, namespace: str, name: str):
    pod = core_v1.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def test_registry_serves_and_card_pods_pull_verified_builds(core_v1, real_cluster, namespace, wait_until, tmp_path):
    from kubernetes import client

    apps = client.AppsV1Api(core_v1.api_client)
    wait_until(lambda: (apps.read_namespaced_deployment("registry", devcluster.BUILD_REGISTRY_NAMESPACE)
                        .status.ready_replicas or 0) == 1, 120, "the registry Deployment Ready")
    ports = devcluster.port_forward(real_cluster.state_dir, real_cluster.kubeconfig,
                                    devcluster.BUILD_REGISTRY_NAMESPACE, "svc/registry",
                                    [devcluster.BUILD_REGISTRY_PORT], name="port-forward-build-registry",
                                    tie_to_parent=True)
    local = f"127.0.0.1:{ports[devcluster.BUILD_REGISTRY_PORT]}"
    policy = FetchPolicy(cache_dir=tmp_path / "cache")
    record = write_artifact(tmp_path / "out")
    try:
        manifest = push_build(tmp_path / "out", local, policy)
        assert build_exists(local, record.digest, policy) == manifest
    finally:
        devcluster.stop_process(real_cluster.state_dir, "port-forward-build-registry")
    card = card_wired_with(record, build_reference(devcluster.BUILD_REGISTRY, manifest))

    core_v1.create_namespaced_pod(namespace, puller("pull", card))
    pod = wait_until(lambda: finished(core_v1, namespace, "pull"), 120, "the pulling pod to finish")
    log = core_v1.read_namespaced_pod_log("pull", namespace)
    assert pod.status.phase == "Succeeded", log
    listed = dict(line.split() for line in log.strip().splitlines())
    assert listed == {name: hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest()
                      for name in ("build.json", "report.json", segment_file(0, 3))}

    # the registry keeps blobs in its emptyDir under the node's kubelet dir: change the segment's there
    hexdigest = hashlib.sha256(SEGMENT).hexdigest()
    [blob] = (real_cluster.state_dir / "nodes").glob(
        f"**/kubernetes.io~empty-dir/storage/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data")
    blob.write_bytes(SEGMENT.replace(b"graph", b"GRAPH", 1))
    core_v1.create_namespaced_pod(namespace, puller("tampered", card))
    pod = wait_until(lambda: finished(core_v1, namespace, "tampered"), 120, "the tampered pod to finish")
    [init] = pod.status.init_container_statuses
    assert pod.status.phase == "Failed" and init.state.terminated.exit_code == 2
    assert pod.status.container_statuses[0].state.running is None and \
        pod.status.container_statuses[0].state.terminated is None, "the main container never started"
    refused = core_v1.read_namespaced_pod_log("tampered", namespace, container="build")
    assert "refused" in refused and f"{segment_file(0, 3)}: digest mismatch" in refused
