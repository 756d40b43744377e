#!/usr/bin/env bash
# Install the Debian packages a real worker node needs (hack/devcluster.py `runtime: real` nodes):
#   containerd, runc, containernetworking-plugins (bridge, host-local, portmap, loopback),
#   iptables, conntrack, socat, and buildah (builds the pause image and test images from scratch).
# Idempotent: does nothing (and no `apt-get update`) when every package is installed. Needs root.
# Other processes may hold the dpkg lock for a moment: apt waits for it (DPkg::Lock::Timeout).
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat buildah)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-node-packages: all installed (${PACKAGES[*]})"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install-node-packages: root is needed to install: ${missing[*]}" >&2; exit 1; }

t0=$SECONDS
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -o DPkg::Lock::Timeout=300)
apt-get "${apt_opts[@]}" update >/dev/null
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
# the Debian containerd package starts a system-wide containerd; the dev cluster runs its own per node
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi
echo "install-node-packages: installed ${missing[*]} in $((SECONDS - t0))s"
