#!/usr/bin/env bash
# Build the local control plane's programs from source into .cache/bin:
#   kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes),
#   etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok), helm (helm.sh/helm/v3);
#   registry (github.com/distribution/distribution/v3, the CNCF OCI registry, hack/registry: its own module so
#   its dependencies never move the Kubernetes pins);
# and on request the programs of real worker nodes (NODE_TOOLS): kubelet, kube-proxy
# (k8s.io/kubernetes), coredns (hack/coredns, its own module), and our pause,
# alveo-device-plugin and cri-clear (hack/tools/cmd/*).
# Versions are pinned by hack/tools/go.mod + go.sum (hack/coredns/ for CoreDNS).
# Binaries are static (CGO_ENABLED=0) and version-stamped through -ldflags. A binary
# is rebuilt only when it is missing or its stamp (hash of its module's go.mod and
# go.sum, our own sources for hack/tools/cmd, this script's BUILD_RECIPE and the Go
# version) changed, so a second run takes about a second.
#
# Usage: hack/build-tools.sh [--force] [TOOL...|node]  (default: the control plane; node: NODE_TOOLS)
# Env:   ELASTICDF_CACHE  cache folder (default: <repo>/.cache); binaries go to $ELASTICDF_CACHE/bin
#        GO_BUILD_P       go build -p (default 2: the machines have 2 cores)
set -euo pipefail

# Bump when the way a binary is built changes (flags, ldflags, package paths).
BUILD_RECIPE=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_MOD="$ROOT/hack/tools"
CACHE="${ELASTICDF_CACHE:-$ROOT/.cache}"
BIN="$CACHE/bin"
P="${GO_BUILD_P:-2}"
ALL_TOOLS=(etcd kwok helm kube-apiserver kube-scheduler kube-controller-manager registry)
NODE_TOOLS=(kubelet kube-proxy coredns pause alveo-device-plugin cri-clear)

force=0
wanted=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    node) wanted+=("${NODE_TOOLS[@]}") ;;
    *) wanted+=("$arg") ;;
  esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=("${ALL_TOOLS[@]}")

command -v go >/dev/null || { echo "build-tools: 'go' not found on PATH (Go 1.26 is required)" >&2; exit 1; }
mkdir -p "$BIN"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"

cd "$TOOLS_MOD"
modver() { go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$1"; }

toolchain="$(go env GOVERSION GOOS GOARCH)"
stamp="$( { cat go.mod go.sum; echo "recipe=$BUILD_RECIPE"; echo "$toolchain"; } | sha256sum | cut -c1-16)"
build_date="$(date -u -d "@$(stat -c %Y go.sum)" +%Y-%m-%dT%H:%M:%SZ)"

stamp_of() { # $1 = tool: the module stamp above, or a hash over the tool's own module or sources
  case "$1" in
    coredns) { cat "$ROOT"/hack/coredns/{go.mod,go.sum,main.go}; echo "recipe=$BUILD_RECIPE"; echo "$toolchain"; } \
               | sha256sum | cut -c1-16 ;;
    registry) { cat "$ROOT"/hack/registry/{go.mod,go.sum}; echo "recipe=$BUILD_RECIPE"; echo "$toolchain"; } \
               | sha256sum | cut -c1-16 ;;
    pause|alveo-device-plugin|cri-clear) { echo "$stamp"; cat "cmd/$1"/*.go; } | sha256sum | cut -c1-16 ;;
    *) echo "$stamp" ;;
  esac
}

need_build() { # $1 = tool name
  [ "$force" = 1 ] && return 0
  [ -x "$BIN/$1" ] || return 0
  [ "$(cat "$BIN/.$1.stamp" 2>/dev/null)" = "$(stamp_of "$1")" ] || return 0
  return 1
}

# Resolve versions lazily (go list -m is quick, but only do it when something is built).
K8S_VER="" ; ETCD_VER="" ; KWOK_VER="" ; HELM_VER=""
resolve_versions() {
  [ -n "$K8S_VER" ] && return
  K8S_VER="$(modver k8s.io/kubernetes)"
  ETCD_VER="$(modver go.etcd.io/etcd/server/v3)"
  KWOK_VER="$(modver sigs.k8s.io/kwok)"
  HELM_VER="$(modver helm.sh/helm/v3)"
}

k8s_ldflags() { # gitVersion v1.36.3 -> major 1, minor 36
  local v="${K8S_VER#v}" major minor
  major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
  local f="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $pkg.gitVersion=$K8S_VER -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    f+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean"
    f+=" -X $pkg.buildDate=$build_date"
  done
  echo "$f"
}

build_one() { # $1 = tool
  local tool="$1" pkg ldflags ver dir="$TOOLS_MOD"
  resolve_versions
  case "$tool" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy)
      pkg="k8s.io/kubernetes/cmd/$tool"; ver="$K8S_VER"; ldflags="$(k8s_ldflags)" ;;
    pause|alveo-device-plugin|cri-clear)
      pkg="./cmd/$tool"; ver="(hack/tools/cmd)"; ldflags="-s -w" ;;
    coredns)
      dir="$ROOT/hack/coredns"; pkg="."
      ver="$(cd "$dir" && modver github.com/coredns/coredns)"
      ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=release-$ver" ;;
    registry)
      dir="$ROOT/hack/registry"; pkg="github.com/distribution/distribution/v3/cmd/registry"
      ver="$(cd "$dir" && modver github.com/distribution/distribution/v3)"
      ldflags="-s -w -X github.com/distribution/distribution/v3/version.version=$ver" ;;
    etcd)
      # the etcd server's main package is the module root in 3.6
      pkg="go.etcd.io/etcd/server/v3"; ver="$ETCD_VER"
      ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release-$ETCD_VER" ;;
    kwok)
      pkg="sigs.k8s.io/kwok/cmd/kwok"; ver="$KWOK_VER"
      ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VER#v}" ;;
    helm)
      pkg="helm.sh/helm/v3/cmd/helm"; ver="$HELM_VER"
      ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VER -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
    *) echo "build-tools: unknown tool '$tool' (known: ${ALL_TOOLS[*]} ${NODE_TOOLS[*]})" >&2; return 2 ;;
  esac
  local t0=$SECONDS
  printf 'building %s %s (go build -p %s, started %s) ...\n' "$tool" "$ver" "$P" "$(date +%H:%M:%S)"
  rm -f "$BIN/.$tool.stamp"
  (cd "$dir" && go build -p "$P" -trimpath -ldflags "$ldflags" -o "$BIN/$tool.tmp" "$pkg")
  mv -f "$BIN/$tool.tmp" "$BIN/$tool"
  stamp_of "$tool" > "$BIN/.$tool.stamp"
  printf 'build-tools: built %s in %ss\n' "$tool" "$((SECONDS - t0))"
}

total0=$SECONDS
built=0
n=${#wanted[@]}
i=0
for tool in "${wanted[@]}"; do
  i=$((i + 1))
  if need_build "$tool"; then
    printf 'build-tools: (%d/%d) ' "$i" "$n"
    build_one "$tool"
    built=$((built + 1))
  else
    printf 'build-tools: (%d/%d) %s up to date\n' "$i" "$n" "$tool"
  fi
done
if [ "$built" -gt 0 ]; then
  echo "build-tools: built $built tool(s) in $((SECONDS - total0))s into $BIN"
fi
