"""Regenerate docs/metrics-example.txt from a real run: `.venv/bin/python docs/metrics_example.py [OUT]`.

Starts a private control plane (hack/devcluster.py, state in a temporary directory, random loopback ports:
it never touches `make demo`'s cluster), creates the simulated nodes of examples/clusters/mixed-rack.yaml,
applies crds/, runs the operator as a local process with --metrics-port, applies examples/resnet50.yaml and
a MobileNetV1 with spec.autoscaling whose observed fps comes from the elasticdf.io/observed-fps annotation
(simulated pods serve no /metrics), waits until both are Running, then saves the elasticdf_* families of
GET /metrics. Everything it started is stopped at the end. Takes about a minute once the tools are built.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from elasticdf_operator.local import install_crds, local_operator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

import devcluster  # noqa: E402

GROUP, VERSION, PLURAL = "elasticdf.io", "v1alpha1", "elasticinferences"
OUT = ROOT / "docs" / "metrics-example.txt"
MOBILENET = {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference",
    "metadata": {"name": "mobilenetv1", "annotations": {f"{GROUP}/observed-fps": "1500"}},
    "spec": {"model": {"name": "mobilenetv1"}, "replicas": 1,
             "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetFPS": 2000}},
}


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def elasticdf_only(text: str) -> str:
    keep = []
    for line in text.splitlines():
        if line.startswith(("# HELP elasticdf_", "# TYPE elasticdf_", "elasticdf_")):
            keep.append(line)
    return "\n".join(keep) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    from kubernetes import client, config

    devcluster.build_tools(quiet=True)
    with tempfile.TemporaryDirectory(prefix="elasticdf-metrics-") as tmp:
        state = Path(tmp)
        cluster = devcluster.up(state, state / "kubeconfig", tie_to_parent=True)
        try:
            kubeconfig = cluster.kubeconfig
            devcluster.apply_nodes(kubeconfig, yaml.safe_load((ROOT / "examples/clusters/mixed-rack.yaml").read_text()))
            api = config.new_client_from_config(config_file=str(kubeconfig))
            custom = client.CustomObjectsApi(api)
            install_crds(api, ROOT / "crds")
            port = devcluster.free_port()
            env = {"ELASTICDF_SCRAPE": "0", "ELASTICDF_AUTOSCALE_SECONDS": "1"}
            flags = ("--metrics-port", str(port), "--resync-seconds", "2")
            with local_operator(kubeconfig, *flags, log=state / "operator.log", env=env):
                for body in (yaml.safe_load((ROOT / "examples/resnet50.yaml").read_text()), MOBILENET):
                    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)

                def running() -> bool:
                    for name in ("resnet50", "mobilenetv1"):
                        status = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name).get(
                            "status") or {}
                        if status.get("phase") != "Running":
                            return False
                    return True

                wait(running, 180, "resnet50 and mobilenetv1 Running")
                wait(lambda: "elasticdf_observed_fps{" in scrape(port), 30, "observed fps from the autoscaler")
                text = elasticdf_only(scrape(port))
        finally:
            devcluster.down(state)
    header = ("# GET /metrics of the operator (python -m elasticdf_operator --metrics-port N), elasticdf_*\n"
              "# families only (prometheus_client also serves python_* and process_* ones).\n"
              "# Captured by docs/metrics_example.py:\n"
              "# simulated nodes of examples/clusters/mixed-rack.yaml, examples/resnet50.yaml, and a mobilenetv1\n"
              "# with spec.autoscaling and annotation elasticdf.io/observed-fps=1500. No reconcile raised, so\n"
              "# elasticdf_reconcile_errors_total has no samples yet.\n")
    out.write_text(header + text)
    print(f"wrote {out} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
