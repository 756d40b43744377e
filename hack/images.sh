#!/usr/bin/env bash
# Build the container images from images/*/Dockerfile with buildah on a local Debian base, into
# .cache/images/<name>.tar (see hack/images.py for details).
#   hack/images.sh [build|check|plan] [NAME...]      NAME: segment gateway operator discovery (default: all)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec python3 "$ROOT/hack/images.py" "$@"
