#!/usr/bin/env bash
# The quickstart, cold start to a served model: a local control plane, two real kubelet nodes with simulated
# Alveo cards next to kwok nodes (examples/clusters/demo.yaml), our images (built from this tree; a no-op when
# they are current), the Helm chart (the operator runs in the cluster, card builds on: the dev cluster's OCI
# registry, builder Jobs on the real nodes), examples/cnv.yaml in emulation mode, then real Open Inference Protocol requests through the gateway Service. It ends with the endpoint, which
# keeps serving (a background port-forward) until `make down`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${DEMO_CLUSTER:-examples/clusters/demo.yaml}"
EXAMPLE=examples/cnv.yaml
NAME=cnv
RELEASE=elastic-df
OPERATOR_NS=elastic-system
IMAGES=(segment gateway operator)
export HELM_CACHE_HOME="$ROOT/.cache/helm/cache" HELM_CONFIG_HOME="$ROOT/.cache/helm/config" \
  HELM_DATA_HOME="$ROOT/.cache/helm/data"
T0=$SECONDS

step() { printf '\n\033[1m==> %s\033[0m  (%ds)\n' "$*" "$((SECONDS - T0))"; }

step "control plane on 127.0.0.1"
hack/dev-cluster.sh up --no-build
eval "$(hack/dev-cluster.sh env)"

step "images ${IMAGES[*]} from this tree (hack/images.sh: cold ~7 min; nothing rebuilt when nothing changed)"
hack/images.sh build "${IMAGES[@]}"

step "nodes from $CLUSTER (real ones import the images)"
hack/dev-cluster.sh nodes "$CLUSTER" --prune
kubectl get nodes -L elasticdf.io/dev-runtime,elasticdf.io/card-types,elasticdf.io/switch

REGISTRY=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "hack"); import devcluster; print(devcluster.BUILD_REGISTRY)')
step "CRDs from charts/elastic-df/crds (helm creates CRDs once and never upgrades them)"
kubectl apply --server-side --force-conflicts -f charts/elastic-df/crds/

step "helm upgrade --install $RELEASE charts/elastic-df (operator on a real node; card builds in $REGISTRY)"
helm upgrade --install "$RELEASE" charts/elastic-df --namespace "$OPERATOR_NS" --create-namespace \
  --set operator.image.pullPolicy=Never --set-string 'operator.nodeSelector.elasticdf\.io/dev-runtime=real' \
  --set "builds.registry=$REGISTRY" --set builds.insecure=true \
  --set-string 'builds.nodeSelector.elasticdf\.io/dev-runtime=real' --wait --timeout 5m
kubectl -n "$OPERATOR_NS" get pods -o wide

step "kubectl apply -f $EXAMPLE (builder Jobs make its card builds first; card pods pull them by digest)"
kubectl apply -f "$EXAMPLE"
want=$(kubectl get ei "$NAME" -o jsonpath='{.spec.replicas}')
ready=0
for _ in $(seq 1 600); do
  phase=$(kubectl get ei "$NAME" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  ready=$(kubectl get ei "$NAME" -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)
  builds=$(kubectl get ei "$NAME" -o jsonpath='{range .status.builds[*]}{.phase}/{.progress} {end}' 2>/dev/null || true)
  printf '\r  phase=%-12s ready=%s/%s builds: %-40s' "${phase:-?}" "${ready:-0}" "$want" "${builds:-?}"
  [ "${ready:-0}" = "$want" ] && break
  sleep 1
done
echo
if [ "${ready:-0}" != "$want" ]; then
  kubectl get ei "$NAME" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
  kubectl get pods -o wide
  echo "demo: $NAME is not Ready; see kubectl describe ei/$NAME and kubectl logs of its pods" >&2
  exit 1
fi
kubectl get pods -o wide -l "elasticdf.io/name=$NAME"
kubectl get pods -o wide -l "elasticdf.io/gateway=$NAME"
kubectl get ei "$NAME" -o jsonpath='{range .status.builds[*]}build {.digest} {.cardType}: {.phase}, {.artifact}{"\n"}{end}'
kubectl -n "$OPERATOR_NS" get jobs

step "the gateway Service on 127.0.0.1 (kubectl port-forward in the background until make down)"
port=$(hack/dev-cluster.sh port-forward default "svc/$NAME-gateway" 8000)

step "Open Inference Protocol requests (tritonclient) through the gateway, checked against the unsplit model"
.venv/bin/python hack/oip_client.py --url "127.0.0.1:$port" --model "$NAME" --answers 4 --seconds 5 --concurrency 4

step "kubectl get ei"
kubectl get ei

printf '\ndemo: ready in %ds; `make down` stops the cluster and the port-forward\n' "$((SECONDS - T0))"
echo "endpoint: http://127.0.0.1:$port/v2/models/$NAME"
