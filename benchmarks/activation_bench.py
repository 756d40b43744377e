"""Standby activation end to end, on the cluster `make demo` leaves running (real nodes, operator in the cluster).

From `kubectl scale ei/cnv` to the gateway having the instance in its rotation (its metric
elasticdf_gateway_instances_ready), for an instance already flashed on the placed card (CNV: 19 instances per
U280, the demo uses 2): the operator's reaction, the wiring ConfigMap, the kubelet refreshing the gateway's
mounted copy, the gateway's wiring poll and its results hello to the segment. Also the way back (deactivation).
No card pod may be created or deleted meanwhile. operator_bench.py measures the operator's share alone.

Run: .venv/bin/python benchmarks/activation_bench.py [--rounds 8]   (writes benchmarks/results/activation.md;
     runs hack/demo.sh first when the demo's model is not being served)
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
import devcluster  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "activation.md"
NAME = "cnv"
READY = re.compile(r'elasticdf_gateway_instances_ready\{model="cnv"\} (\S+)')


def kubectl(*args: str) -> str:
    argv = [devcluster.kubectl_binary(), f"--kubeconfig={devcluster.DEFAULT_KUBECONFIG}", *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def in_rotation(port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return int(float(READY.search(text).group(1)))


def scale_and_wait(port: int, replicas: int, timeout: float = 60.0) -> float:
    start = time.monotonic()
    kubectl("scale", f"ei/{NAME}", f"--replicas={replicas}")
    while in_rotation(port) != replicas:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"the gateway did not reach {replicas} instances in {timeout:.0f} s")
        time.sleep(0.01)
    return time.monotonic() - start


def card_pods() -> str:
    return kubectl("get", "pods", "-l", f"elasticdf.io/name={NAME}", "-o",
                   "jsonpath={range .items[*]}{.metadata.uid} {end}")


def demo_running() -> bool:
    try:
        return kubectl("get", f"ei/{NAME}", "-o", "jsonpath={.status.phase}") == "Running"
    except (subprocess.CalledProcessError, devcluster.ClusterError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds between steps (the drain period)")
    args = parser.parse_args()
    if not demo_running():
        subprocess.run([str(ROOT / "hack" / "demo.sh")], check=True)
    base = int(kubectl("get", f"ei/{NAME}", "-o", "jsonpath={.spec.replicas}"))
    port = devcluster.port_forward(devcluster.DEFAULT_STATE, devcluster.DEFAULT_KUBECONFIG, "default",
                                   f"svc/{NAME}-gateway", [8000], name="port-forward-activation")[8000]
    pods = card_pods()
    up, down = [], []
    for _ in range(args.rounds):
        up.append(scale_and_wait(port, base + 1))
        time.sleep(args.settle)
        down.append(scale_and_wait(port, base))
        time.sleep(args.settle)
    churn = "none" if card_pods() == pods else "card pods changed"
    rows = [("activation: kubectl scale -> in the gateway's rotation", up),
            ("deactivation: kubectl scale -> out of the rotation", down)]
    lines = ["# Standby activation end to end", "",
             f"`.venv/bin/python benchmarks/activation_bench.py --rounds {args.rounds}` after `make demo` (2 real "
             f"nodes, operator and gateway in the cluster), {NAME} scaled {base} <-> {base + 1}, 2 cores. Card pod "
             f"churn during the run: {churn}.", "",
             "| step | target | median | max | runs |", "|---|---|---|---|---|"]
    for what, times in rows:
        lines.append(f"| {what} | <= 1 s | {statistics.median(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms "
                     f"| {', '.join(f'{t * 1000:.0f}' for t in times)} |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if churn == "none" else 1


if __name__ == "__main__":
    raise SystemExit(main())
