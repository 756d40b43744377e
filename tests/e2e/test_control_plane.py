"""The local control plane is a real Kubernetes: schema validation, scheduling against extended
resources, garbage collection and helm all behave as on a production cluster (no mocks)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import devcluster
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.e2e

CHARTS = Path(__file__).parent / "charts"


def _card_resource(card: str) -> str:
    return devcluster.load_card_catalog()[card].device_plugin_resource


def _pod(name: str, *, resources: dict[str, str] | None = None, node_selector: dict[str, str] | None = None,
         owner: client.V1OwnerReference | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, owner_references=[owner] if owner else None),
        spec=client.V1PodSpec(
            node_selector=node_selector,
            containers=[client.V1Container(
                name="main", image="registry.invalid/segment:0",  # never pulled: kwok simulates containers
                resources=client.V1ResourceRequirements(limits=resources) if resources else None,
            )],
        ),
    )


def test_server_reports_the_built_kubernetes_version(k8s_client):
    info = client.VersionApi(k8s_client).get_code()
    go_mod = (devcluster.HACK / "tools" / "go.mod").read_text()
    pinned = re.search(r"k8s\.io/kubernetes (v\S+)", go_mod).group(1)
    assert info.git_version == pinned


def test_crd_schema_violation_is_rejected(k8s_client, namespace, wait_for):
    ext = client.ApiextensionsV1Api(k8s_client)
    group, plural = "e2e.elasticdf.io", f"widgets{uuid.uuid4().hex[:6]}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["cards"],
                        "properties": {
                            "cards": {"type": "integer", "minimum": 1, "maximum": 8},
                            "cardType": {"type": "string", "enum": ["u200", "u250", "u280", "u55c"]},
                        },
                    }},
                }},
            }],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:
        def established():
            got = ext.read_custom_resource_definition(f"{plural}.{group}")
            return any(c.type == "Established" and c.status == "True" for c in (got.status.conditions or []))

        wait_for(established, 30, "the CRD to be Established")
        custom = client.CustomObjectsApi(k8s_client)

        def widget(name: str, spec: dict) -> dict:
            return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}

        # discovery of a new CRD can lag a moment behind Established: retry the valid create briefly
        def create_valid():
            try:
                return custom.create_namespaced_custom_object(
                    group, "v1", namespace, plural, widget("ok", {"cards": 2, "cardType": "u280"}))
            except ApiException as err:
                if err.status == 404:
                    return None
                raise

        assert wait_for(create_valid, 30, "the valid object to be accepted")["spec"]["cards"] == 2

        for bad_spec, field in (({"cards": 99}, "spec.cards"), ({"cards": "two"}, "spec.cards"),
                                ({"cardType": "u280"}, "spec.cards"), ({"cards": 1, "cardType": "k80"},
                                                                        "spec.cardType")):
            with pytest.raises(ApiException) as caught:
                custom.create_namespaced_custom_object(group, "v1", namespace, plural, widget("bad", bad_spec))
            assert caught.value.status == 422, bad_spec
            assert field in caught.value.body, (bad_spec, caught.value.body)
    finally:
        ext.delete_custom_resource_definition(f"{plural}.{group}")


def test_u280_pod_runs_on_a_node_with_a_free_u280_and_a_second_one_stays_pending(
        kubeconfig, core_v1, namespace, wait_for):
    # nodes of this test alone (own switch label), so other tests' nodes cannot change the card count
    switch = f"sched-{uuid.uuid4().hex[:6]}"
    cluster = {"nodes": [
        {"name": f"{switch}-u280", "cards": ["u280"], "switch": switch},
        {"name": f"{switch}-u250", "cards": ["u250", "u200"], "switch": switch},
    ]}
    devcluster.apply_nodes(kubeconfig, cluster)
    try:
        u280 = _card_resource("u280")
        select = {devcluster.LABEL_SWITCH: switch}
        core_v1.create_namespaced_pod(namespace, _pod("first", resources={u280: "1"}, node_selector=select))

        def running():
            pod = core_v1.read_namespaced_pod("first", namespace)
            return pod if pod.status.phase == "Running" else None

        pod = wait_for(running, 30, "the first U280 pod to be Running")
        assert pod.spec.node_name == f"{switch}-u280"
        node = core_v1.read_node(pod.spec.node_name)
        internal_ip = next(a.address for a in node.status.addresses if a.type == "InternalIP")
        assert pod.status.pod_ip and pod.status.host_ip == internal_ip
        assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)

        core_v1.create_namespaced_pod(namespace, _pod("second", resources={u280: "1"}, node_selector=select))

        def unschedulable():
            pod = core_v1.read_namespaced_pod("second", namespace)
            for cond in pod.status.conditions or []:
                if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                    return pod, cond
            return None

        pod, cond = wait_for(unschedulable, 30, "the scheduler to report the second pod Unschedulable")
        assert pod.status.phase == "Pending" and not pod.spec.node_name
        assert f"Insufficient {u280}" in cond.message

        # freeing the card lets the pending pod run on the same node
        core_v1.delete_namespaced_pod("first", namespace)
        pod = wait_for(lambda: (p := core_v1.read_namespaced_pod("second", namespace)).status.phase == "Running"
                       and p, 60, "the second pod to run once the U280 is free")
        assert pod.spec.node_name == f"{switch}-u280"
    finally:
        for node in cluster["nodes"]:
            core_v1.delete_node(node["name"])


def test_deleting_an_owner_garbage_collects_its_pods(k8s_client, core_v1, namespace, simulated_nodes, wait_for):
    owner = core_v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"role": "owner"}))
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    for i in range(2):
        core_v1.create_namespaced_pod(namespace, _pod(f"owned-{i}", owner=ref, node_selector={"type": "kwok"}))
    core_v1.create_namespaced_pod(namespace, _pod("bystander", node_selector={"type": "kwok"}))
    wait_for(lambda: all(p.status.phase == "Running" for p in core_v1.list_namespaced_pod(namespace).items),
             30, "the pods to be Running")

    core_v1.delete_namespaced_config_map("owner", namespace)
    wait_for(lambda: [p.metadata.name for p in core_v1.list_namespaced_pod(namespace).items] == ["bystander"],
             60, "the garbage collector to delete the owned pods")

    # the same through a workload controller: a ReplicaSet's pods go with it
    apps = client.AppsV1Api(k8s_client)
    labels = {"app": "rs-gc"}
    apps.create_namespaced_replica_set(namespace, client.V1ReplicaSet(
        metadata=client.V1ObjectMeta(name="rs"),
        spec=client.V1ReplicaSetSpec(
            replicas=3,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=_pod("x", node_selector={"type": "kwok"}).spec,
            ),
        ),
    ))

    def rs_pods():
        return core_v1.list_namespaced_pod(namespace, label_selector="app=rs-gc").items

    wait_for(lambda: len(rs_pods()) == 3 and all(p.status.phase == "Running" for p in rs_pods()), 30,
             "3 running ReplicaSet pods")
    apps.delete_namespaced_replica_set("rs", namespace, propagation_policy="Background")
    wait_for(lambda: not rs_pods(), 60, "the ReplicaSet's pods to be garbage collected")


def test_helm_install_of_a_small_chart(control_plane, kubeconfig, core_v1, namespace, simulated_nodes,
                                       tmp_path, k8s_client):
    helm = str(control_plane.bin_dir / "helm")
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HELM_CACHE_HOME=str(tmp_path / "cache"),
               HELM_CONFIG_HOME=str(tmp_path / "config"), HELM_DATA_HOME=str(tmp_path / "data"))

    def run(*args: str) -> str:
        res = subprocess.run([helm, *args], env=env, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    run("install", "demo", str(CHARTS / "tiny"), "--namespace", namespace, "--set", "greeting=hi-alveo",
        "--wait", "--timeout", "90s")
    assert "deployed" in run("status", "demo", "--namespace", namespace)
    cm = core_v1.read_namespaced_config_map("demo-tiny", namespace)
    assert cm.data == {"greeting": "hi-alveo"}
    deployment = client.AppsV1Api(k8s_client).read_namespaced_deployment("demo-tiny", namespace)
    assert deployment.status.ready_replicas == 2
    run("uninstall", "demo", "--namespace", namespace, "--wait")
    with pytest.raises(ApiException) as caught:
        core_v1.read_namespaced_config_map("demo-tiny", namespace)
    assert caught.value.status == 404
