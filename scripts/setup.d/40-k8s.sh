#!/usr/bin/env bash
# The Kubernetes control plane for test/k8s: kube-apiserver, kube-controller-manager, kubectl and etcd, built
# from their upstream Go modules (test/k8s/build/go.mod pins the versions) into a cache outside the repo:
#   ${RFT_K8S_CACHE:-$HOME/.cache/rft-k8s}/<version>/bin/{kube-apiserver,kube-controller-manager,kubectl,etcd}
# Skips the build when all four binaries are there. One `go build` builds all four so they share compilation.
# Debian's etcd-server (3.4.x) is older than what this Kubernetes is tested against (etcd 3.6/3.7), so etcd is
# built at the version k8s.io/kubernetes itself requires.
# Env: RFT_K8S_CACHE (cache root), RFT_K8S_BUILD_JOBS (go build -p, default 2), RFT_K8S_FORCE=1 (rebuild).
set -euo pipefail
cd "$(dirname "$0")/../.."

# What the harness runs besides the binaries: ip (network namespaces), unshare/nsenter, openssl (its PKI).
if ! command -v ip >/dev/null || ! command -v nsenter >/dev/null || ! command -v openssl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq iproute2 util-linux openssl
fi

MODDIR=test/k8s/build
VERSION=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$MODDIR/go.mod")
if [ -z "$VERSION" ]; then
  echo "40-k8s: cannot read the k8s.io/kubernetes version from $MODDIR/go.mod" >&2
  exit 1
fi
CACHE=${RFT_K8S_CACHE:-$HOME/.cache/rft-k8s}
DEST=$CACHE/$VERSION
BIN=$DEST/bin
BINARIES=(kube-apiserver kube-controller-manager kubectl etcd)

have_all() {
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

if [ "${RFT_K8S_FORCE:-0}" != 1 ] && have_all; then
  echo "40-k8s: Kubernetes $VERSION binaries present in $BIN"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "40-k8s: Go is needed to build Kubernetes $VERSION (go.mod asks for $(awk '$1 == "go" { print $2 }' "$MODDIR/go.mod") or newer)" >&2
  exit 1
fi

mkdir -p "$DEST"
# One builder at a time (parallel test runs may call this); the second waits, then finds the binaries.
exec 9>"$DEST/.build.lock"
flock 9
if [ "${RFT_K8S_FORCE:-0}" != 1 ] && have_all; then
  echo "40-k8s: Kubernetes $VERSION binaries present in $BIN"
  exit 0
fi

MINOR=$(echo "$VERSION" | cut -d. -f2)
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS="$LDFLAGS -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR"
  LDFLAGS="$LDFLAGS -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

OUT=$(mktemp -d "$DEST/build.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
echo "40-k8s: building Kubernetes $VERSION and etcd into $BIN (this takes a while on a small machine)"
start=$(date +%s)
(
  cd "$MODDIR"
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    go build -trimpath -p "${RFT_K8S_BUILD_JOBS:-2}" -ldflags "$LDFLAGS" -o "$OUT/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl \
    go.etcd.io/etcd/server/v3
)
# `go build -o DIR/` names go.etcd.io/etcd/server/v3's binary after "server".
mv "$OUT/server" "$OUT/etcd"
for b in "${BINARIES[@]}"; do
  [ -x "$OUT/$b" ] || { echo "40-k8s: $b was not built" >&2; exit 1; }
done
rm -rf "$BIN"
mv "$OUT" "$BIN"
trap - EXIT
echo "40-k8s: built in $(( $(date +%s) - start )) s: $("$BIN/kube-apiserver" --version), etcd $("$BIN/etcd" --version | head -1)"
