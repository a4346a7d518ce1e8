#!/usr/bin/env bash
# Helm for the chart tests (test/helm), built from its upstream Go module at a pinned version into a cache
# outside the repo (no Debian package provides Helm 3):
#   ${RFT_HELM_CACHE:-$HOME/.cache/rft-helm}/<version>/bin/helm
# Skips the build when the binary is there. Env: RFT_HELM_CACHE, RFT_HELM_FORCE=1 (rebuild).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=v3.22.0 # helm.sh/helm/v3; bump here and in test/helm/helm.ts
# The Kubernetes version `helm template` and `helm lint` assume (Helm's Makefile derives it from its
# k8s.io/client-go v0.37.x; without it they assume 1.20 and refuse charts that need newer).
K8S_MINOR=37
CACHE=${RFT_HELM_CACHE:-$HOME/.cache/rft-helm}
DEST=$CACHE/$VERSION
BIN=$DEST/bin/helm

if [ "${RFT_HELM_FORCE:-0}" != 1 ] && [ -x "$BIN" ]; then
  echo "45-helm: Helm $VERSION present at $BIN"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "45-helm: Go is needed to build Helm $VERSION" >&2
  exit 1
fi

mkdir -p "$DEST"
exec 9>"$DEST/.build.lock"
flock 9
if [ "${RFT_HELM_FORCE:-0}" != 1 ] && [ -x "$BIN" ]; then
  echo "45-helm: Helm $VERSION present at $BIN"
  exit 0
fi

OUT=$(mktemp -d "$DEST/build.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
echo "45-helm: building Helm $VERSION into $DEST/bin"
start=$(date +%s)
# `go install pkg@version` builds with Helm's own go.mod/go.sum (checked against the checksum database).
(
  cd "$OUT"
  GOBIN="$OUT/bin" GOFLAGS="-buildvcs=false" CGO_ENABLED=0 \
    go install -trimpath -p "${RFT_HELM_BUILD_JOBS:-2}" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR" \
    "helm.sh/helm/v3/cmd/helm@$VERSION"
)
[ -x "$OUT/bin/helm" ] || { echo "45-helm: helm was not built" >&2; exit 1; }
rm -rf "$DEST/bin"
mv "$OUT/bin" "$DEST/bin"
echo "45-helm: built in $(( $(date +%s) - start )) s: $("$BIN" version --short)"
