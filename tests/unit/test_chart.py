"""The Helm chart charts/elastic-df, rendered with the repository's helm (.cache/bin/helm, built by
hack/build-tools.sh; `make test` builds it first): lint, least-privilege RBAC that still covers every API
call of the operator, a hardened Deployment, the values schema, CRDs equal to crds/, the Grafana dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "elastic-df"
HELM = ROOT / ".cache" / "bin" / "helm"
OPERATOR = ROOT / "operator" / "src" / "elasticdf_operator"
FETCH_POLICY = ROOT / "partitioner" / "src" / "elasticdf_partitioner" / "artifacts.py"
SM_API = "monitoring.coreos.com/v1/ServiceMonitor"

NO_HELM = f"{HELM} is not built (run hack/build-tools.sh or make tools)"
needs_helm = pytest.mark.skipif(not HELM.exists(), reason=NO_HELM)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def render(*sets: str, api_versions: tuple[str, ...] = ()) -> list[dict]:
    args = ["template", "rel", str(CHART), "--namespace", "elastic-system"]
    for s in sets:
        args += ["--set", s]
    for a in api_versions:
        args += ["--api-versions", a]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


ALL_ON = ("discovery.enabled=true", "gateway.enabled=true", "gateway.inference=resnet50",
          "gateway.service.enabled=true", "serviceMonitor.enabled=true")


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    if not HELM.exists():
        pytest.skip(NO_HELM)
    return render()


@pytest.fixture(scope="module")
def all_docs() -> list[dict]:
    if not HELM.exists():
        pytest.skip(NO_HELM)
    return render(*ALL_ON, api_versions=(SM_API,))


@needs_helm
def test_helm_lint_is_clean():
    out = helm("lint", str(CHART), "--strict").stdout
    assert "0 chart(s) failed" in out and "[WARNING]" not in out and "[ERROR]" not in out, out
    out = helm("lint", str(CHART), "--strict", *sum((["--set", s] for s in ALL_ON), [])).stdout
    assert "0 chart(s) failed" in out, out


def test_default_install_renders_the_operator_only(default_docs):
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Role", "RoleBinding", "Service",
                     "ServiceAccount"]
    assert not find(default_docs, "ServiceMonitor") and not find(default_docs, "DaemonSet")


# ---- RBAC -----------------------------------------------------------------------------------------

def rules_of(docs: list[dict]) -> list[dict]:
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


def test_rbac_has_no_wildcards(all_docs):
    rules = rules_of(all_docs)
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in v for v in rule.get(key, [])), f"wildcard in {key}: {rule}"
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule


def allowed(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


# Kubernetes client methods of elasticdf_operator.kube -> (API group, resource, verb). A new call there fails
# test_rbac_covers_every_api_call_of_the_operator until it is listed here and granted in _helpers.tpl.
CLIENT_CALLS = {
    "list_node": ("", "nodes", "list"),
    "list_pod_for_all_namespaces": ("", "pods", "list"),
    "list_config_map_for_all_namespaces": ("", "configmaps", "list"),
    "list_namespaced_pod": ("", "pods", "list"),
    "list_namespaced_config_map": ("", "configmaps", "list"),
    "read_namespaced_config_map": ("", "configmaps", "get"),
    "list_namespaced_service": ("", "services", "list"),
    "create_namespaced_pod": ("", "pods", "create"),
    "create_namespaced_config_map": ("", "configmaps", "create"),
    "create_namespaced_service": ("", "services", "create"),
    "create_namespaced_event": ("", "events", "create"),
    "delete_namespaced_pod": ("", "pods", "delete"),
    "patch_namespaced_pod": ("", "pods", "patch"),
    "delete_namespaced_service": ("", "services", "delete"),
    "patch_namespaced_config_map": ("", "configmaps", "patch"),
    "patch_namespaced_service": ("", "services", "patch"),
    "patch_namespaced_deployment": ("apps", "deployments", "patch"),
    "delete_namespaced_deployment": ("apps", "deployments", "delete"),
    "delete_collection_namespaced_pod": ("", "pods", "deletecollection"),
    "delete_collection_namespaced_config_map": ("", "configmaps", "deletecollection"),
    "list_cluster_custom_object": ("elasticdf.io", "fabrics", "list"),
    "get_namespaced_custom_object": ("elasticdf.io", "elasticinferences", "get"),
    "patch_namespaced_custom_object_status": ("elasticdf.io", "elasticinferences/status", "patch"),
    "patch_namespaced_custom_object_scale": ("elasticdf.io", "elasticinferences/scale", "patch"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "create_namespaced_job": ("batch", "jobs", "create"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
}


APPLY_CREATES = {"patch_namespaced_config_map", "patch_namespaced_service", "patch_namespaced_deployment"}


def operator_api_calls() -> set[tuple[str, str, str]]:
    """(group, resource, verb) the operator needs: its client calls in kube.py and kopf's watches."""
    kube = (OPERATOR / "kube.py").read_text()
    methods = set(re.findall(r"self\.(?:core|custom|apps|batch)\.(\w+)", kube))
    unknown = methods - set(CLIENT_CALLS)
    assert not unknown, f"kube.py calls {sorted(unknown)}: add them to CLIENT_CALLS and to the chart's RBAC"
    needed = {CLIENT_CALLS[m] for m in methods}
    # Kube.apply is a server-side apply: its PATCH creates a missing object, which is authorised as create
    needed |= {(CLIENT_CALLS[m][0], CLIENT_CALLS[m][1], "create") for m in methods & APPLY_CREATES}
    handlers = (OPERATOR / "handlers.py").read_text()
    watched = re.findall(r"kopf\.(?:index|on\.event)\(\s*(\"[^\"]*\"|GROUP),\s*(?:\"[^\"]*\"|VERSION),\s*\"(\w+)\"",
                         handlers)
    assert watched, "no kopf watches found in handlers.py"
    for group, resource in watched:
        group = "elasticdf.io" if group == "GROUP" else group.strip('"')
        needed |= {(group, resource, "list"), (group, resource, "watch")}
    # kopf on the ElasticInferences: watch, finalizer + progress patches, status patches
    needed |= {("elasticdf.io", "elasticinferences", v) for v in ("list", "watch", "patch")}
    needed.add(("elasticdf.io", "elasticinferences/status", "patch"))
    # leader election (leader.py): the client's LeaseLock reads, creates and replaces the Lease
    assert "LeaseLock" in (OPERATOR / "leader.py").read_text()
    needed |= {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    return needed


def operator_rules(docs: list[dict]) -> list[dict]:
    return rules_of([d for d in docs if d["kind"] in ("ClusterRole", "Role")
                     and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"])


def test_rbac_covers_every_api_call_of_the_operator(builds_docs):
    rules = operator_rules(builds_docs)
    missing = [c for c in sorted(operator_api_calls()) if not allowed(rules, *c)]
    assert not missing, f"the chart's ClusterRole does not grant {missing}"


@pytest.fixture(scope="module")
def builds_docs() -> list[dict]:
    return render("builds.registry=registry.elasticdf-system.svc:5000", "builds.insecure=true",
                  "builds.xrtImage=finn:0.10", "builds.nodeSelector.vivado=yes", "builds.recreations=2",
                  "builds.pullSecret=buildcred")


def test_builds_values_reach_the_operator_and_only_then_job_rbac(default_docs, builds_docs):
    from elasticdf_operator.buildjobs import BuildSettings

    env = {e["name"]: e.get("value") for e in find(builds_docs, "Deployment")[0]["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    settings = BuildSettings.from_env({k: v for k, v in env.items() if v is not None})
    assert (settings.registry, settings.insecure, settings.xrt_image, settings.node_selector,
            settings.recreations) == ("registry.elasticdf-system.svc:5000", True, "finn:0.10", (("vivado", "yes"),), 2)
    pod = find(builds_docs, "Deployment")[0]["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "builds-pull-secret"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "builds-pull-secret"]
    assert settings.docker_config == f"{mount['mountPath']}/config.json"
    assert volume["secret"]["secretName"] == "buildcred"
    (role,) = [r for r in find(builds_docs, "Role") if r["metadata"]["name"].endswith("-builds")]
    assert {(r["apiGroups"][0], res) for r in role["rules"] for res in r["resources"]} == {
        ("batch", "jobs"), ("", "pods"), ("", "pods/log")}
    assert not [r for r in find(default_docs, "Role") if r["metadata"]["name"].endswith("-builds")]
    assert not any(e["name"].startswith("ELASTICDF_BUILD_") for e in find(default_docs, "Deployment")[0]["spec"][
        "template"]["spec"]["containers"][0]["env"])


def test_rbac_is_least_privilege(default_docs):
    rules = operator_rules(default_docs)
    granted = {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    # CRDs: kopf's runtime scanning of resources (read-only); everything else must be used by the code
    extra = granted - operator_api_calls() - {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
                                              ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}
    assert not extra, f"granted but not used by the operator: {sorted(extra)}"
    for verb in ("update", "create", "patch", "delete"):
        assert not allowed(rules, "", "nodes", verb), "the operator only reads nodes"
    assert not any(res in r["resources"] for r in rules for res in ("secrets", "clusterroles", "roles"))


def test_namespaced_mode_uses_roles(default_docs):
    docs = render("operator.watchNamespaces={team-a,team-b}", "builds.registry=r:5000")
    roles = [r for r in find(docs, "Role") if not r["metadata"]["name"].endswith(("-leader", "-builds"))]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = [b for b in find(docs, "RoleBinding") if not b["metadata"]["name"].endswith(("-leader", "-builds"))]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    cluster = find(docs, "ClusterRole")[0]["rules"]
    # namespaces: kopf with --namespace watches them (a 403 otherwise, tests/e2e/test_chart_install.py)
    assert {r for rule in cluster for r in rule["resources"]} == {"nodes", "fabrics", "customresourcedefinitions",
                                                                  "namespaces"}
    assert not any("namespaces" in r["resources"] for r in rules_of(default_docs))
    both = operator_rules(docs)
    assert all(allowed(both, *c) for c in operator_api_calls())
    args = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_discovery_agent_may_only_patch_nodes(all_docs):
    role = find(all_docs, "ClusterRole", "rel-elastic-df-discovery")[0]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}]
    binding = find(all_docs, "ClusterRoleBinding", "rel-elastic-df-discovery")[0]
    ds = find(all_docs, "DaemonSet")[0]["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == ds["serviceAccountName"] == "rel-elastic-df-discovery"
    gateway = find(all_docs, "Deployment", "rel-elastic-df-gateway-resnet50")[0]["spec"]["template"]["spec"]
    assert gateway["automountServiceAccountToken"] is False


# ---- workloads -----------------------------------------------------------------------------------------

def containers(docs: list[dict]) -> list[tuple[dict, dict]]:
    return [(d["spec"]["template"]["spec"], c) for d in docs if d["kind"] in ("Deployment", "DaemonSet")
            for c in d["spec"]["template"]["spec"]["containers"]]


def test_every_container_runs_hardened(all_docs):
    found = containers(all_docs)
    assert len(found) == 3
    for pod, c in found:
        sc, psc = c["securityContext"], pod.get("securityContext", {})
        assert sc["runAsNonRoot"] is True and psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, c["name"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
        assert "privileged" not in sc and not pod.get("hostNetwork") and not pod.get("hostPID")


def test_operator_deployment(default_docs):
    dep = find(default_docs, "Deployment")[0]
    # two replicas, one acting: leader election over a Lease in the release namespace
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = dep["spec"]["template"]["spec"]
    assert "--leader-elect" in pod["containers"][0]["args"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in \
        pod["containers"][0]["env"]
    (leader,) = [r for r in find(default_docs, "Role") if r["metadata"]["name"].endswith("-leader")]
    assert leader["metadata"]["namespace"] == dep["metadata"]["namespace"]
    assert leader["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                "verbs": ["get", "create", "update"]}]
    assert pod["serviceAccountName"] == find(default_docs, "ServiceAccount")[0]["metadata"]["name"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/elasticdf/operator:0.1.0"
    assert "--metrics-port=9090" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp", "/var/cache/elasticdf/models"}
    svc = find(default_docs, "Service")[0]
    assert svc["spec"]["ports"][0]["port"] == 9090
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_operator_flags_exist():
    """Every flag the chart passes is one `python -m elasticdf_operator` accepts."""
    main = (OPERATOR / "__main__.py").read_text()
    template = (CHART / "templates" / "deployment.yaml").read_text()
    for flag in set(re.findall(r"- (--[a-z-]+)", template)):
        assert f'"{flag}"' in main, f"the operator has no {flag}"
    readers = [OPERATOR / "handlers.py", OPERATOR / "reconcile.py", OPERATOR / "modelfetch.py",
               OPERATOR / "buildjobs.py", FETCH_POLICY]
    code = "".join(p.read_text() for p in readers)
    for env in set(re.findall(r"name: (ELASTICDF_\w+)", template)):
        assert env in code, f"the operator does not read {env}"


def test_gateway_is_selected_by_the_operators_service(all_docs):
    from elasticdf_operator import builders
    from elasticdf_operator.builders import Owner

    svc = builders.gateway_service_object(Owner("resnet50", "elastic-system", "uid"))
    dep = find(all_docs, "Deployment", "rel-elastic-df-gateway-resnet50")[0]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert labels.get(builders.LABEL_MANAGED) != builders.MANAGER  # not mistaken for a segment pod
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["ports"][0]["containerPort"] == svc["spec"]["ports"][0]["port"] == builders.GATEWAY_PORT
    (volume,) = dep["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == builders.gateway_configmap_name("resnet50")  # the operator's wiring


def test_service_monitor_only_when_enabled_and_available(all_docs):
    (sm,) = find(all_docs, "ServiceMonitor")
    svc = find(all_docs, "Service", "rel-elastic-df-metrics")[0]
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    res = helm("template", "rel", str(CHART), "--set", "serviceMonitor.enabled=true", check=False)
    assert res.returncode != 0 and "Prometheus Operator" in res.stderr


def test_model_fetch_values_reach_the_operator():
    """Size limit, file root (with its volume), pull secret (mounted: no RBAC on Secrets) and pvc claims."""
    from elasticdf_partitioner.artifacts import FetchPolicy

    docs = render("modelFetch.maxBytes=1000", "modelFetch.fileRoot=/srv/models",
                  "modelFetch.fileVolume.hostPath.path=/data/models", "modelFetch.pullSecret=regcred",
                  "modelFetch.pvcClaims={models}", "modelFetch.plainHttpRegistries={reg.local:5000}")
    pod = find(docs, "Deployment")[0]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    policy = FetchPolicy.from_env(env)
    assert policy.max_bytes == 1000 and str(policy.file_root) == "/srv/models"
    assert policy.plain_http_registries == ("reg.local:5000",) and env["ELASTICDF_MODEL_PULL_SECRET"] == "regcred"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert str(policy.docker_config).startswith(mounts["/var/run/secrets/elasticdf/registry"]["mountPath"])
    assert volumes["model-pull-secret"]["secret"]["secretName"] == "regcred"
    assert volumes[mounts["/srv/models"]["name"]]["hostPath"] == {"path": "/data/models"}
    assert mounts[f"{policy.pvc_root}/models"]["readOnly"] is True
    assert volumes["model-pvc-models"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert str(policy.cache_dir) in mounts
    assert not any("secrets" in r["resources"] for r in rules_of(docs))


# ---- values schema ----------------------------------------------------------------------------------------

BAD_VALUES = [
    "operator.image.pullPolicy=Sometimes",
    "metrics.port=70000",
    "metrics.port=http",
    "operator.workers=0",
    "operator.resyncSeconds=0",
    "operator.notReadyGraceSeconds=-1",
    "operator.gatewayDrainSeconds=soon",
    "operator.watchNamespaces={Not_A_Namespace}",
    "operator.bogus=1",
    "rbac.create=maybe",
    "serviceMonitor.interval=soon",
    "discovery.interval=0",
    "gateway.enabled=true",
    "gateway.maxInstances=0",
    "metrics.service.type=Ingress",
    "operator.resources.requests.cpu=lots",
    "modelFetch.maxBytes=0",
    "modelFetch.fileRoot=relative/path",
    "modelFetch.pullSecret=Not_A_Name",
    "modelFetch.pvcClaims={Bad_Claim}",
    "modelFetch.cacheSizeLimit=huge",
]


@needs_helm
@pytest.mark.parametrize("value", BAD_VALUES)
def test_schema_rejects_bad_values(value):
    res = helm("template", "rel", str(CHART), "--set", value, check=False)
    assert res.returncode != 0, f"--set {value} rendered"
    assert "values don't meet the specifications of the schema" in res.stderr or "at '/" in res.stderr, res.stderr


@needs_helm
def test_schema_accepts_good_values():
    render("operator.workers=4", "operator.notReadyGraceSeconds=120", "operator.gatewayDrainSeconds=3",
           "metrics.port=8443", "operator.watchNamespaces={ml}", "gateway.enabled=true",
           "gateway.inference=mobilenet", "operator.resources.requests.cpu=250m", "discovery.enabled=true")


def test_values_schema_requires_every_top_level_section():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(schema["required"]) <= set(values)
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])


# ---- CRDs and dashboard --------------------------------------------------------------------------------------

def test_chart_crds_are_the_generated_crds():
    ours = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    theirs = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert ours == theirs, "charts/elastic-df/crds differs from crds/: python -m elasticdf_operator.docgen"


def exported_metric_names() -> set[str]:
    """Sample names the operator's metrics module exposes (gauge: name; counter: _total; histogram: _bucket...)."""
    from elasticdf_operator import metrics
    from prometheus_client import Counter, Gauge, Histogram

    names = set()
    for obj in vars(metrics).values():
        if isinstance(obj, Gauge):
            names.add(obj._name)
        elif isinstance(obj, Counter):
            names |= {f"{obj._name}_total", f"{obj._name}_created"}
        elif isinstance(obj, Histogram):
            names |= {f"{obj._name}_{s}" for s in ("bucket", "sum", "count", "created")}
    return names


def test_dashboard_uses_only_exported_metrics(default_docs):
    text = (CHART / "dashboards" / "elastic-df.json").read_text()
    dash = json.loads(text)
    (cm,) = find(default_docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["elastic-df.json"]) == dash
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    used = {m for e in exprs for m in re.findall(r"\belasticdf_[a-z_]+", e)}
    exported = exported_metric_names()
    assert used and not used - exported, f"dashboard queries metrics the operator does not export: {used - exported}"
    for needed in ("elasticdf_predicted_fps", "elasticdf_observed_fps", "elasticdf_cost_per_hour",
                   "elasticdf_fps_per_dollar_hour", "elasticdf_instances", "elasticdf_plan_seconds_bucket",
                   "elasticdf_reconcile_errors_total"):
        assert needed in used, needed
    assert any("histogram_quantile" in e and "elasticdf_plan_seconds_bucket" in e for e in exprs)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) == 6
