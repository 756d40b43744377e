#!/usr/bin/env bash
# Local Kubernetes control plane with simulated Alveo nodes (see hack/devcluster.py for details).
#   hack/dev-cluster.sh up                 build tools if needed, start etcd, kube-apiserver,
#                                          kube-controller-manager, kube-scheduler and kwok on 127.0.0.1
#   hack/dev-cluster.sh nodes FILE [--prune]   create/update kwok nodes from a cluster YAML (DESIGN §5.2)
#   hack/dev-cluster.sh status | down [--purge] | env
# State (pids, logs, certs, etcd data) lives in .cache/run, the admin kubeconfig in .cache/kubeconfig.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"
exec "$PY" "$ROOT/hack/devcluster.py" "$@"
