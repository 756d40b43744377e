#!/usr/bin/env bash
# The quickstart: a local control plane with simulated Alveo nodes, the CRDs, the operator (a local process,
# since images cannot be built here), examples/resnet50.yaml applied, then `kubectl get ei` and the plan.
# Everything keeps running afterwards; `make down` stops it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${DEMO_CLUSTER:-examples/clusters/mixed-rack.yaml}"
RUN=.cache/run
mkdir -p "$RUN"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "control plane on 127.0.0.1 (binaries from .cache/bin)"
hack/dev-cluster.sh up
eval "$(hack/dev-cluster.sh env)"

step "simulated Alveo nodes from $CLUSTER"
hack/dev-cluster.sh nodes "$CLUSTER" --prune
kubectl get nodes -L elasticdf.io/card-types,elasticdf.io/switch

step "CRDs (the Helm chart's copies; a unit test keeps them identical to crds/)"
kubectl apply -f charts/elastic-df/crds/
kubectl wait --for condition=established --timeout=60s crd/elasticinferences.elasticdf.io crd/fabrics.elasticdf.io

step "operator (log: $RUN/operator.log)"
if [ -f "$RUN/operator.pid" ] && kill -0 "$(cat "$RUN/operator.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$RUN/operator.pid"))"
else
  nohup .venv/bin/python -m elasticdf_operator --metrics-port 9090 > "$RUN/operator.log" 2>&1 &
  echo $! > "$RUN/operator.pid"
  echo "started (pid $!), metrics on http://127.0.0.1:9090/metrics"
fi

step "kubectl apply -f examples/resnet50.yaml"
kubectl apply -f examples/resnet50.yaml
want=$(kubectl get ei resnet50 -o jsonpath='{.spec.replicas}')
for _ in $(seq 1 120); do
  phase=$(kubectl get ei resnet50 -o jsonpath='{.status.phase}' 2>/dev/null || true)
  ready=$(kubectl get ei resnet50 -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)
  printf '\r  phase=%-12s ready=%s/%s ' "${phase:-?}" "${ready:-0}" "$want"
  [ "${ready:-0}" = "$want" ] && break
  sleep 1
done
echo
kubectl get ei
kubectl get pods -o wide -l elasticdf.io/name=resnet50
echo "instances placed by the operator (status.plan):"
kubectl get ei resnet50 -o jsonpath='{range .status.plan.instances[*]}  instance {.index}: {.fps} fps on {range .segments[*]}{.node}/{.card} {.cardType} layers {.layers}; {end}{"\n"}{end}'

step "what the whole rack could run, one instance per card as the operator deploys (picture: .cache/demo-plan.png)"
.venv/bin/elasticdf plan --model resnet50 --cluster "$CLUSTER" --exclusive-cards \
  --json .cache/demo-plan.json --picture .cache/demo-plan.png

step "done: the control plane and operator keep running; \`make down\` stops them"
