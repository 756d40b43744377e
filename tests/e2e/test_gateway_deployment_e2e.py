"""The operator's inference gateway against the real local control plane (kwok nodes): per ElasticInference a
Deployment whose pod is scheduled and selected by the `<name>-gateway` Service, a wiring ConfigMap that
lists the active instances and follows scaling in place (activating a standby instance replaces neither the
gateway pod nor a card pod), status.endpoint, and cleanup on deletion."""

from __future__ import annotations

from pathlib import Path

import pytest
from cardpods import GROUP, PLURAL, VERSION, ei, serving, uids
from elasticdf_contract.wiring import check_chain
from elasticdf_gateway.__main__ import load_wirings
from elasticdf_gateway.pipeline import Pipeline
from kubernetes.client.rest import ApiException
from test_operator import operator  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture
def apps(k8s_client):
    from kubernetes import client

    return client.AppsV1Api(k8s_client)


def read(fn, *args):
    try:
        return fn(*args)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def gateway_pods(core_v1, ns: str, name: str) -> list:
    pods = core_v1.list_namespaced_pod(ns, label_selector=f"elasticdf.io/gateway={name},"
                                                          "elasticdf.io/role=gateway").items
    return [p for p in pods if not p.metadata.deletion_timestamp]


def mounted_wiring(core_v1, ns: str, name: str, tmp: Path) -> Pipeline:
    """What the gateway program loads from its mounted ConfigMap (kwok runs no container, so read it here)."""
    cm = core_v1.read_namespaced_config_map(f"{name}-gateway-wiring", ns)
    tmp.mkdir(parents=True, exist_ok=True)
    for old in tmp.iterdir():
        old.unlink()
    for key, value in (cm.data or {}).items():
        (tmp / key).write_text(value)
    return Pipeline(load_wirings([str(tmp)]))


def endpoint_ips(discovery, ns: str, service: str) -> set[str]:
    slices = discovery.list_namespaced_endpoint_slice(ns, label_selector=f"kubernetes.io/service-name={service}")
    return {a for s in slices.items for e in (s.endpoints or []) for a in e.addresses}


def test_gateway_follows_the_instances(operator, custom, core_v1, apps, k8s_client, namespace, pool,  # noqa: F811 (operator: fixture)
                                       wait_for, tmp_path):
    from kubernetes import client

    placement = pool(["u280"], ["u280"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, ei("gw", placement=placement))
    wait_for(lambda: serving(core_v1, custom, namespace, "gw", 1), 60, "1 instance serving")
    cards = uids(core_v1, namespace, "gw")

    dep = wait_for(lambda: read(apps.read_namespaced_deployment, "gw-gateway", namespace), 30, "gateway Deployment")
    ei_obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gw")
    assert dep.metadata.labels["elasticdf.io/name"] == "gw" and dep.metadata.labels["elasticdf.io/role"] == "gateway"
    (ref,) = dep.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("ElasticInference", "gw", ei_obj["metadata"]["uid"], True)
    spec = dep.spec.template.spec
    (container,) = spec.containers
    (volume,) = spec.volumes
    assert volume.config_map.name == "gw-gateway-wiring"
    assert container.volume_mounts[0].name == volume.name
    assert f"--wiring={container.volume_mounts[0].mount_path}" in container.args and "--model=cnv" in container.args
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert spec.security_context.run_as_non_root is True
    assert not any(k.startswith("amd.com/") for k in (container.resources.limits or {})), "needs no card"

    # its pod is scheduled (kwok reports it Running) and the Service the segments send to selects it
    def scheduled():
        pods = gateway_pods(core_v1, namespace, "gw")
        return pods[0] if len(pods) == 1 and pods[0].spec.node_name and pods[0].status.phase == "Running" else None
    pod = wait_for(scheduled, 60, "the gateway pod Running on a node")
    svc = core_v1.read_namespaced_service("gw-gateway", namespace)
    assert svc.spec.selector.items() <= pod.metadata.labels.items()
    assert svc.spec.ports[0].port == container.ports[0].container_port == 8000
    discovery = client.DiscoveryV1Api(k8s_client)
    wait_for(lambda: pod.status.pod_ip in endpoint_ips(discovery, namespace, "gw-gateway"), 30,
             "the gateway pod behind the Service")
    status = wait_for(lambda: (custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gw")
                               .get("status") or {}).get("endpoint"), 30, "status.endpoint")
    assert status == f"http://gw-gateway.{namespace}.svc:8000/v2/models/cnv"

    pipeline = mounted_wiring(core_v1, namespace, "gw", tmp_path / "one")
    assert [i.id for i in pipeline.instances] == [f"{namespace}/gw-0"]

    digest = (pod.metadata.annotations or {}).get("elasticdf.io/wiring-digest")

    # scale 1 -> 2: a standby instance of the placed card becomes active; the mounted wiring gains it, the
    # gateway pod stays (it reloads in place) and no card pod is created
    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "gw", {"spec": {"replicas": 2}})
    wait_for(lambda: serving(core_v1, custom, namespace, "gw", 2), 60, "2 instances serving")
    assert uids(core_v1, namespace, "gw") == cards
    wait_for(lambda: len(mounted_wiring(core_v1, namespace, "gw", tmp_path / "two").instances) == 2, 30,
             "the gateway wiring with 2 instances")
    pipeline = mounted_wiring(core_v1, namespace, "gw", tmp_path / "two")
    assert [i.id for i in pipeline.instances] == [f"{namespace}/gw-0", f"{namespace}/gw-1"]
    for inst in pipeline.instances:
        assert check_chain(inst.wirings) == []
        assert inst.wirings[-1].downstream.host == f"gw-gateway.{namespace}.svc"
    assert [p.metadata.uid for p in gateway_pods(core_v1, namespace, "gw")] == [pod.metadata.uid]
    # the gateway pod is updated with the new wiring's digest: the kubelet re-syncs it and refreshes the mount
    wait_for(lambda: (gateway_pods(core_v1, namespace, "gw")[0].metadata.annotations or {}).get(
        "elasticdf.io/wiring-digest") not in (None, digest), 30, "the gateway pod told of the new wiring")

    # scale to zero: the Deployment stays, its wiring is empty (the gateway reports not ready)
    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "gw", {"spec": {"replicas": 0}})
    wait_for(lambda: not (core_v1.read_namespaced_config_map("gw-gateway-wiring", namespace).data or {}), 60,
             "empty gateway wiring at 0 replicas")
    assert read(apps.read_namespaced_deployment, "gw-gateway", namespace) is not None

    # deletion: the finalizer removes the Deployment (its pods follow), the wiring and the Service
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gw")
    wait_for(lambda: read(apps.read_namespaced_deployment, "gw-gateway", namespace) is None, 30,
             "gateway Deployment deleted")
    wait_for(lambda: read(core_v1.read_namespaced_config_map, "gw-gateway-wiring", namespace) is None, 30,
             "gateway wiring deleted")
    wait_for(lambda: read(core_v1.read_namespaced_service, "gw-gateway", namespace) is None, 30,
             "gateway Service deleted")
    wait_for(lambda: not gateway_pods(core_v1, namespace, "gw"), 60, "gateway pods gone")
