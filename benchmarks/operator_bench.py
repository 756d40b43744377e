"""Operator benchmark on the real local control plane (hack/devcluster.py, kwok Alveo nodes).

1. apply -> every instance ready: ResNet-50 on 4 nodes x 2 U280, replicas 4 (the card groups the plan needs,
   one pod per card). Wall clock from the create call until status.readyReplicas is 4 and every card pod is
   Running, with the operator running as a separate process (as deployed); the first run includes loading
   the model.
2. Operator fps / CLI plan fps: the examples (MobileNetV1 on 2 x U280, ResNet-50 on the mixed rack, with its
   switches as a Fabric) deployed with spec.replicas = the CLI plan's instances: status.predictedFPS over
   the `elasticdf plan` total on the same cluster file (target 1.00).
3. Standby activation (operator side): from `kubectl scale` (the scale subresource) to the gateway wiring
   ConfigMap listing the newly active instance, for instances already flashed on a placed card (CNV: 19
   instances per U280). The gateway then sees the change when the kubelet updates its mounted copy.
4. One reconcile pass with 1000 simulated nodes (2000 U280 cards, from a generated cluster description):
   the plain reconcile over an index-like snapshot (what the kopf handlers pass), for an already placed
   resource (steady state) and for placing a new group (solve + create); plus the memory of that snapshot
   and, for comparison, the time to list the nodes from the API server (what an unindexed reconcile pays).
Run: .venv/bin/python benchmarks/operator_bench.py   (writes benchmarks/results/operator.md)
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import yaml
from elasticdf_operator.local import install_crds, local_operator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
import devcluster  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "operator.md"
GROUP, VERSION, PLURAL = "elasticdf.io", "v1alpha1", "elasticinferences"
NS = "bench"


def ei(name: str, model: str, replicas: int, switch: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "metadata": {"name": name},
            "spec": {"model": {"name": model}, "replicas": replicas,
                     "placement": {"nodeSelector": {"elasticdf.io/switch": switch}}}}


def wait(predicate, timeout: float, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError


def ready(custom, core, name: str, replicas: int) -> bool:
    status = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name).get("status") or {}
    if status.get("replicas") != replicas or status.get("readyReplicas") != replicas:
        return False
    pods = core.list_namespaced_pod(NS, label_selector=f"elasticdf.io/name={name},elasticdf.io/role=card").items
    return bool(pods) and all(p.status.phase == "Running" for p in pods)


def delete(core, custom, name: str) -> None:
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    wait(lambda: not core.list_namespaced_pod(NS, label_selector=f"elasticdf.io/name={name}").items, 60, 0.1)
    wait(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"], 60, 0.1)


def apply_to_ready(core, custom, name: str, switch: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, ei(name, "resnet50", 4, switch))
    wait(lambda: ready(custom, core, name, 4), 120)
    elapsed = time.perf_counter() - started
    status = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)["status"]
    delete(core, custom, name)
    return elapsed, len(status["plan"]["groups"]), status["plan"]["cardsUsed"]


def cli_plan(model: str, cluster: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan.json"
        subprocess.run([sys.executable, "-m", "elasticdf_partitioner.cli", "plan", "--model", model, "--cluster",
                        str(cluster), "--json", str(out)], check=True, capture_output=True, timeout=600)
        return json.loads(out.read_text())


def operator_vs_cli(kubeconfig: Path, core, custom, model: str, cluster_file: str) -> dict:
    """Deploy `model` on the nodes of an example cluster file with the CLI plan's instance count."""
    path = ROOT / "examples" / "clusters" / cluster_file
    cluster, plan = yaml.safe_load(path.read_text()), cli_plan(model, path)
    prefix = f"cmp-{model}"
    nodes = [{"name": f"{prefix}-{i}", "cards": n["cards"], "switch": f"{prefix}-{n.get('switch', 'leaf')}"}
             for i, n in enumerate(cluster["nodes"])]
    devcluster.apply_nodes(kubeconfig, {"nodes": nodes})
    for n in nodes:
        core.patch_node(n["name"], {"metadata": {"labels": {"bench.elasticdf.io/pool": prefix}}})
    switches = [{"name": f"{prefix}-{s['name']}", "uplinkGbps": s["uplink_gbps"],
                 **({"to": f"{prefix}-{s['to']}"} if s.get("to") else {})} for s in cluster.get("switches", [])]
    if switches:
        custom.create_cluster_custom_object(GROUP, VERSION, "fabrics", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Fabric", "metadata": {"name": prefix},
            "spec": {"switches": switches}})
    body = ei(model, model, len(plan["instances"]), "")
    body["spec"]["placement"] = {"nodeSelector": {"bench.elasticdf.io/pool": prefix}}
    started = time.perf_counter()
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    wait(lambda: ready(custom, core, model, len(plan["instances"])), 600, 0.2)
    elapsed = time.perf_counter() - started
    status = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, model)["status"]
    delete(core, custom, model)
    if switches:
        custom.delete_cluster_custom_object(GROUP, VERSION, "fabrics", prefix)
    return {"model": model, "cluster": cluster_file, "cli": plan["total_fps"], "operator": status["predictedFPS"],
            "instances": len(plan["instances"]), "cards": status["plan"]["cardsUsed"], "seconds": elapsed}


def bench_activation(core, custom, switch: str, steps: int = 6) -> list[float]:
    """Scale 1 -> 2 -> ... inside one placed card: time until the gateway wiring lists the new instance."""
    name = "activate"
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, ei(name, "cnv", 1, switch))
    wait(lambda: ready(custom, core, name, 1), 120)
    standby = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)["status"]["standbyReplicas"]
    assert standby >= steps, f"{standby} standby instances: too few to activate {steps}"
    pods = {p.metadata.uid for p in core.list_namespaced_pod(NS, label_selector=f"elasticdf.io/name={name}").items}
    times = []
    for replicas in range(2, steps + 2):
        started = time.perf_counter()
        custom.patch_namespaced_custom_object_scale(GROUP, VERSION, NS, PLURAL, name, {"spec": {"replicas": replicas}})

        def listed(n=replicas):
            data = core.read_namespaced_config_map(f"{name}-gateway-wiring", NS).data or {}
            return len({k.split("-segment-")[0] for k in data}) == n

        wait(listed, 30, 0.005)
        times.append(time.perf_counter() - started)
    after = {p.metadata.uid for p in core.list_namespaced_pod(NS, label_selector=f"elasticdf.io/name={name}").items}
    assert after == pods, "activation created or replaced pods"
    delete(core, custom, name)
    return times


def bench_apply(kubeconfig: Path, core, custom) -> dict:
    switch = "bench-apply"
    devcluster.apply_nodes(kubeconfig, {"nodes": [{"name": f"apply-{i}", "cards": ["u280", "u280"],
                                                   "switch": switch} for i in range(4)]})
    with local_operator(kubeconfig, "--metrics-port", "0", "--resync-seconds", "2"):
        # the operator is up once it has written the status of a resource with nothing to place
        probe = ei("probe", "cnv", 0, switch)
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, probe)
        wait(lambda: (custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "probe").get("status")
                      or {}).get("phase"), 120, 0.1)
        delete(core, custom, "probe")
        runs = [apply_to_ready(core, custom, f"resnet50-{i}", switch) for i in range(4)]
        activation = bench_activation(core, custom, switch)
        examples = [operator_vs_cli(kubeconfig, core, custom, "mobilenetv1", "2xU280.yaml"),
                    operator_vs_cli(kubeconfig, core, custom, "resnet50", "mixed-rack.yaml")]
    return {"cold": runs[0][0], "warm": [r[0] for r in runs[1:]], "groups": runs[0][1], "pods": runs[0][2],
            "activation": activation, "examples": examples}


def bench_reconcile(kubeconfig: Path, api_client, core, custom) -> dict:
    from elasticdf_operator.kube import Kube
    from elasticdf_operator.reconcile import reconcile
    from elasticdf_operator.state import Ledger, Observed
    from elasticdf_partitioner.catalog import load_catalog

    doc = {"nodes": [{"name": f"big-{i:04d}", "cards": ["u280", "u280"], "switch": f"big-leaf-{i // 32}"}
                     for i in range(1000)]}
    path = Path(tempfile.mkdtemp()) / "cluster-1000.yaml"
    path.write_text(yaml.safe_dump(doc))
    started = time.perf_counter()
    devcluster.apply_nodes(kubeconfig, yaml.safe_load(path.read_text()), timeout=600)
    create_s = time.perf_counter() - started
    kube, catalog = Kube(api_client), load_catalog()

    started = time.perf_counter()
    listed = kube.observe()
    list_s = time.perf_counter() - started
    tracemalloc.start()
    snapshot = kube.observe()  # the projected objects the indexes hold
    index_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    nodes = [n for n in snapshot.nodes if n["metadata"]["name"].startswith("big-")]
    assert len(nodes) == 1000, len(nodes)
    ledger = Ledger()

    def index() -> Observed:  # what the kopf handlers hand over: the indexed snapshot + our writes
        return Observed(listed.nodes, list(listed.pods), list(listed.configmaps), listed.fabrics)

    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "metadata": {"name": "steady"},
            "spec": {"model": {"name": "resnet50"}, "replicas": 1}}
    place, place_cpu = [], []
    for i in range(3):
        body["metadata"]["name"] = f"place-{i}"
        obj = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        started, cpu = time.perf_counter(), time.process_time()
        status = reconcile(kube, obj, index, ledger, catalog)
        place.append(time.perf_counter() - started)
        place_cpu.append(time.process_time() - cpu)
        assert status["replicas"] == 1, status
    listed = kube.observe()  # the index caught up
    steady = []
    for _ in range(10):
        started = time.perf_counter()
        reconcile(kube, obj, index, ledger, catalog)
        steady.append(time.perf_counter() - started)
    return {"create_s": create_s, "list_s": list_s, "index_mb": index_bytes / 2**20, "place": place,
            "place_cpu": place_cpu,
            "steady": steady, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cards": sum(len(n["metadata"]["annotations"].get("elasticdf.io/cards", "").split(",")) for n in nodes)}


def main() -> int:
    from kubernetes import client, config

    devcluster.build_tools(quiet=True)
    state = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    devcluster.up(state, state / "kubeconfig", tie_to_parent=True)
    try:
        kubeconfig = state / "kubeconfig"
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        install_crds(api_client, ROOT / "crds")
        core.create_namespace({"metadata": {"name": NS}})
        wait(lambda: core.list_namespaced_service_account(NS).items, 30, 0.1)
        apply = bench_apply(kubeconfig, core, custom)
        rec = bench_reconcile(kubeconfig, api_client, core, custom)
    finally:
        devcluster.down(state)
    warm, act = statistics.median(apply["warm"]), apply["activation"]
    steady, place = statistics.median(rec["steady"]), statistics.median(rec["place"])
    rows = [
        (f"apply -> 4 instances ready (resnet50 on 4 x 2 U280: {apply['groups']} group(s), {apply['pods']} card "
         "pods), first", "<= 3 s", f"{apply['cold']:.2f} s"),
        ("same, median of 3 more applies", "<= 3 s", f"{warm:.2f} s (runs: "
         + ", ".join(f"{x:.2f}" for x in apply["warm"]) + ")"),
    ]
    rows += [(f"operator fps / CLI plan fps, {e['model']} on {e['cluster']} ({e['instances']} instances, "
              f"{e['cards']} cards; deployed in {e['seconds']:.0f} s)", "1.00",
              f"{e['operator'] / e['cli']:.4f} ({e['operator']:.1f} / {e['cli']:.1f} fps)")
             for e in apply["examples"]]
    rows += [
        ("standby activation, operator side: kubectl scale -> gateway wiring ConfigMap lists the instance, "
         f"median of {len(act)}", "<= 1 s", f"{statistics.median(act) * 1000:.0f} ms (max "
         f"{max(act) * 1000:.0f} ms)"),
        ("reconcile pass, 1000 nodes / 2000 cards, placed resource (steady state), median of 10", "<= 1 s",
         f"{steady * 1000:.0f} ms"),
        ("group placement on 1000 nodes: reconcile pass placing a new resnet50 group (solve + create), median "
         "of 3; the first run includes loading the model (its option tables and pattern searches from the plan "
         "cache)", "<= 1 s",
         f"{place * 1000:.0f} ms (runs: " + ", ".join(f"{x * 1000:.0f}" for x in rec["place"]) + "; CPU of the "
         "operator process: " + ", ".join(f"{x * 1000:.0f}" for x in rec["place_cpu"]) + ")"),
        ("memory of the indexed snapshot (1000 projected nodes + managed objects)", "-",
         f"{rec['index_mb']:.1f} MiB"),
        ("peak RSS of the benchmark process", "-", f"{rec['rss_mb']:.0f} MiB"),
        ("for comparison: listing the 1000 nodes from the API server (unindexed reconcile)", "-",
         f"{rec['list_s'] * 1000:.0f} ms"),
    ]
    lines = ["# Operator benchmark", "",
             "`.venv/bin/python benchmarks/operator_bench.py` on the local control plane (etcd, kube-apiserver,",
             "scheduler, controller-manager, kwok) on this machine "
             f"({os.cpu_count()} cores). {rec['cards']} cards on the 1000 kwok nodes (created in "
             f"{rec['create_s']:.0f} s).", "",
             "| measure | target | measured |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "The reconcile pass is the plain `reconcile.reconcile` over an index-like snapshot (what the kopf",
              "handlers pass from `kopf.index`), including its API writes (ConfigMap, pods, status, events).",
              "Placing offers the solver only the fullest free nodes that can hold the missing instances",
              "(`decide.candidates`), so the solve does not grow with the cluster. The solver keeps its pattern",
              "searches (the pack search of one card, a card pair, ...) by content: on the pipeline in memory",
              "and next to it in the plan cache ($ELASTICDF_PLAN_CACHE), so placing another group, and a",
              "restarted operator, do not search again. Before this run the plan cache held the models' option",
              "tables but no pattern search for ResNet-50 on U280: the first apply includes that search; the",
              "1000-node placements found it kept by the operator. With an empty plan cache the first plan of a",
              "model also builds its option tables (a run that had to: first apply 25 s on this machine). On this",
              "2-core machine, shared with the API server, etcd and kwok heart-beating 1000 nodes (and with other",
              "agents' tests), wall time is a multiple of the operator's CPU time: it is mostly API round trips.",
              "",
              "Standby activation is measured up to the operator's write. The gateway reads its wiring from a",
              "mounted ConfigMap: the kubelet refreshes the mounted copy on its periodic pod sync (up to about a",
              "minute with default settings) or at once when the pod is updated; this benchmark (kwok, no",
              "kubelet) does not include that step."]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
