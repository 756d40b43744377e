"""`helm install` of charts/elastic-df into the real local control plane, the operator running with the
chart's ServiceAccount (least-privilege RBAC proven by a real reconcile), then `helm uninstall`.

Images cannot be pulled here: kwok plays the kubelet for the simulated nodes (no taints), so the chart's pods
are bound and marked Running without any container; the test asserts on the created objects and runs the
operator as a local process that authenticates with a token of the chart's ServiceAccount instead.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from elasticdf_operator.local import local_operator

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "elastic-df"
GROUP, VERSION = "elasticdf.io", "v1alpha1"
CRDS = ("elasticinferences.elasticdf.io", "fabrics.elasticdf.io")


@pytest.fixture
def helm(control_plane, kubeconfig, tmp_path):
    binary = control_plane.bin_dir / "helm"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HELM_CACHE_HOME=str(tmp_path / "cache"),
               HELM_CONFIG_HOME=str(tmp_path / "config"), HELM_DATA_HOME=str(tmp_path / "data"))

    def run(*args: str) -> str:
        started = time.monotonic()
        res = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=240)
        print(f"helm {args[0]}: {time.monotonic() - started:.1f}s")
        assert res.returncode == 0, f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    return run


def established(ext, name: str) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        crd = ext.read_custom_resource_definition(name)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def token_kubeconfig(core_v1, control_plane, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (TokenRequest API, 1 h)."""
    from kubernetes import client

    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                 expiration_seconds=3600))
    token = core_v1.create_namespaced_service_account_token(sa, namespace, request).status.token
    ca = base64.b64encode((control_plane.pki / "ca.crt").read_bytes()).decode()
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "sa",
           "clusters": [{"name": "c", "cluster": {"server": control_plane.server, "certificate-authority-data": ca}}],
           "users": [{"name": sa, "user": {"token": token}}],
           "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa, "namespace": namespace}}]}
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def can(authz, namespace: str, sa: str, verb: str, resource: str, group: str = "", sub: str = "") -> bool:
    from kubernetes import client

    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=f"system:serviceaccount:{namespace}:{sa}",
        resource_attributes=client.V1ResourceAttributes(namespace=namespace, verb=verb, group=group,
                                                        resource=resource, subresource=sub or None)))
    return authz.create_subject_access_review(review).status.allowed


def test_helm_install_operator_with_chart_rbac_and_uninstall(control_plane, k8s_client, core_v1, namespace,
                                                              simulated_nodes, helm, tmp_path, wait_for):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    release = f"edf-{namespace[-8:]}"
    full = f"{release}-elastic-df"
    started = time.monotonic()
    helm("install", release, str(CHART), "--namespace", namespace, "--set", "discovery.enabled=true",
         "--set", "gateway.enabled=true", "--set", "gateway.inference=cnv-demo", "--set", "metrics.port=9191",
         "--set", f"operator.watchNamespaces={{{namespace}}}")
    print(f"helm install: {time.monotonic() - started:.1f}s")
    assert "STATUS: deployed" in helm("status", release, "--namespace", namespace)

    # CRDs from the chart's crds/ folder are established (or were already, from another test)
    ext = client.ApiextensionsV1Api(k8s_client)
    for name in CRDS:
        wait_for(lambda n=name: established(ext, n), 60, f"CRD {name} established")

    # RBAC objects, workloads, Services, dashboard
    rbac = client.RbacAuthorizationV1Api(k8s_client)
    apps = client.AppsV1Api(k8s_client)
    role = rbac.read_cluster_role(full)
    for rule in role.rules:
        assert "*" not in rule.verbs and "*" not in rule.resources and "*" not in rule.api_groups
    binding = rbac.read_cluster_role_binding(full)
    assert (binding.subjects[0].name, binding.subjects[0].namespace) == (full, namespace)
    # watchNamespaces: the namespaced rules are a Role in the watched namespace
    assert {r for rule in rbac.read_namespaced_role(full, namespace).rules for r in rule.resources} >= {"pods",
                                                                                                     "configmaps"}
    assert rbac.read_namespaced_role_binding(full, namespace).subjects[0].name == full
    assert f"--namespace={namespace}" in apps.read_namespaced_deployment(full, namespace).spec.template.spec \
        .containers[0].args
    assert rbac.read_cluster_role(f"{full}-discovery").rules[0].verbs == ["patch"]
    core_v1.read_namespaced_service_account(full, namespace)
    deployment = apps.read_namespaced_deployment(full, namespace)
    container = deployment.spec.template.spec.containers[0]
    assert container.security_context.run_as_non_root and container.security_context.read_only_root_filesystem
    assert container.liveness_probe.http_get.port == "metrics" and container.ports[0].container_port == 9191
    apps.read_namespaced_daemon_set(f"{full}-discovery", namespace)
    apps.read_namespaced_deployment(f"{full}-gateway-cnv-demo", namespace)
    assert core_v1.read_namespaced_service(f"{full}-metrics", namespace).spec.ports[0].port == 9191
    dashboard = core_v1.read_namespaced_config_map(f"{full}-dashboard", namespace)
    assert dashboard.metadata.labels["grafana_dashboard"] == "1"
    assert json.loads(dashboard.data["elastic-df.json"])["panels"]

    # kwok binds the operator pod to a simulated node and reports it Running (no container runs): fine either way
    def operator_pods():
        return core_v1.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={release},"
                                           "app.kubernetes.io/component=operator").items
    wait_for(lambda: operator_pods(), 30, "the Deployment's pod to be created")
    pod = operator_pods()[0]
    print(f"operator pod {pod.metadata.name}: node={pod.spec.node_name} phase={pod.status.phase}")

    # least privilege, as the API server sees it
    authz = client.AuthorizationV1Api(k8s_client)
    assert can(authz, namespace, full, "patch", "elasticinferences", GROUP, "scale")
    assert can(authz, namespace, full, "deletecollection", "pods")
    assert can(authz, namespace, full, "watch", "nodes")
    assert can(authz, namespace, full, "update", "leases", "coordination.k8s.io")
    for verb, resource, group in (("get", "secrets", ""), ("patch", "nodes", ""), ("update", "elasticinferences",
                                  GROUP), ("update", "deployments", "apps"), ("delete", "fabrics", GROUP)):
        assert not can(authz, namespace, full, verb, resource, group), f"{verb} {resource} should be denied"

    # the operator with exactly the chart's permissions (leader election included) places an instance and
    # cleans it up
    kubeconfig = token_kubeconfig(core_v1, control_plane, namespace, full, tmp_path / "sa-kubeconfig")
    log = tmp_path / "operator.log"
    custom = client.CustomObjectsApi(k8s_client)
    flags = ("--metrics-port", "0", "--resync-seconds", "2", "--namespace", namespace, "--leader-elect",
             "--lease-namespace", namespace, "--lease-seconds", "4")
    with local_operator(kubeconfig, *flags, log=log) as proc:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "metadata": {"name": "cnv-demo"},
                "spec": {"model": {"name": "cnv"}, "replicas": 1}}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "elasticinferences", body)

        def ready():
            ei = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "elasticinferences", "cnv-demo")
            status = ei.get("status") or {}
            return status if status.get("readyReplicas") == 1 and status.get("phase") == "Running" else None
        status = wait_for(ready, 90, "cnv-demo Running with 1 ready instance (operator under the chart's RBAC)")
        assert status["predictedFPS"] > 0 and status["costPerHour"] > 0
        assert core_v1.list_namespaced_event(namespace, field_selector="reason=GroupPlaced").items
        # scale subresource (the autoscaler's path) and the finalizer with deletecollection
        custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, "elasticinferences", "cnv-demo",
                                                    {"spec": {"replicas": 0}})
        wait_for(lambda: not core_v1.list_namespaced_pod(namespace, label_selector="elasticdf.io/name=cnv-demo,"
                                                          "elasticdf.io/role=card").items,
                 60, "card pods released after scale to 0")
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "elasticinferences", "cnv-demo")

        def gone():
            try:
                custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "elasticinferences", "cnv-demo")
            except ApiException as err:
                return err.status == 404
            return False
        wait_for(gone, 60, "cnv-demo deleted (finalizer removed by the operator)")
        assert proc.poll() is None, "the operator exited"
    text = log.read_text()
    print(text[-3000:])
    # "(403)" as the kubernetes client prints it: a bare "403" also matches log timestamps like 12:00:01,403
    for word in ("Forbidden", "(403)", "Not enough permissions"):
        assert word not in text, f"operator log mentions {word!r}: the chart's RBAC misses a permission"

    started = time.monotonic()
    helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    print(f"helm uninstall: {time.monotonic() - started:.1f}s")
    for read in (lambda: rbac.read_cluster_role(full), lambda: rbac.read_cluster_role_binding(full),
                 lambda: rbac.read_cluster_role(f"{full}-discovery"),
                 lambda: core_v1.read_namespaced_service_account(full, namespace),
                 lambda: core_v1.read_namespaced_config_map(f"{full}-dashboard", namespace),
                 lambda: apps.read_namespaced_daemon_set(f"{full}-discovery", namespace)):
        with pytest.raises(ApiException) as caught:
            read()
        assert caught.value.status == 404
    wait_for(lambda: not _exists(lambda: apps.read_namespaced_deployment(full, namespace)), 60,
             "the operator Deployment deleted")
    # helm never deletes CRDs of a chart's crds/ folder (that would delete every ElasticInference)
    assert all(established(ext, name) for name in CRDS)


def _exists(read) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        read()
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True
