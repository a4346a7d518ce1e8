#!/usr/bin/env bash
# Kueue and JobSet for the gang-scheduling tests (test/k8s/controllers.ts starts them against the harness's
# kube-apiserver as host processes). Built from the Go module proxy into a cache outside the repo, keyed by
# version, with each module's rendered manifests (`kubectl kustomize config/default`, kubectl from 40-k8s.sh):
#   ${RFT_GANG_CACHE:-$HOME/.cache/rft-gang}/kueue-<version>/{kueue,manifests.yaml}
#   ${RFT_GANG_CACHE:-$HOME/.cache/rft-gang}/jobset-<version>/{jobset,manifests.yaml}
# Skips what is already there. The versions are the newest the Go proxy serves here (its @v/list is incomplete:
# they were probed one by one). `go install sigs.k8s.io/jobset@v0.12.0` fails (for a module-root main package go
# looks up deprecation in @v/list, which answers 403), so both are built inside their module's own tree with its
# go.mod/go.sum (read-only in the module cache; go build writes nothing there).
# Env: RFT_GANG_CACHE, RFT_GANG_BUILD_JOBS (go build -p, default 2), RFT_GANG_FORCE=1 (rebuild).
set -euo pipefail
cd "$(dirname "$0")/../.."

KUEUE_VERSION=v0.19.2
JOBSET_VERSION=v0.12.0
CACHE=${RFT_GANG_CACHE:-$HOME/.cache/rft-gang}
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' test/k8s/build/go.mod)
KUBECTL=${RFT_K8S_CACHE:-$HOME/.cache/rft-k8s}/$K8S_VERSION/bin/kubectl

if ! command -v go >/dev/null; then
  echo "50-kueue-jobset: Go is needed to build Kueue $KUEUE_VERSION and JobSet $JOBSET_VERSION" >&2
  exit 1
fi
if [ ! -x "$KUBECTL" ]; then
  echo "50-kueue-jobset: kubectl ($KUBECTL) is missing: run scripts/setup.d/40-k8s.sh first" >&2
  exit 1
fi

# build NAME MODULE VERSION PACKAGE: the binary and the rendered manifests into $CACHE/NAME-VERSION (each skipped
# when present; an interrupted build leaves only its temporary folder, removed on the next run).
build() {
  local name=$1 module=$2 version=$3 pkg=$4 dest=$CACHE/$1-$3 dir out start
  mkdir -p "$dest"
  exec 9>"$dest/.build.lock"
  flock 9
  rm -rf "$dest"/build.*
  [ "${RFT_GANG_FORCE:-0}" = 1 ] && rm -f "$dest/$name" "$dest/manifests.yaml"
  if [ -x "$dest/$name" ] && [ -s "$dest/manifests.yaml" ]; then
    echo "50-kueue-jobset: $name $version present in $dest"
    return 0
  fi
  dir=$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  out=$(mktemp -d "$dest/build.XXXXXX")
  if [ ! -x "$dest/$name" ]; then
    start=$(date +%s)
    echo "50-kueue-jobset: building $name $version into $dest (minutes on a small machine)"
    (
      cd "$dir"
      GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
        go build -trimpath -p "${RFT_GANG_BUILD_JOBS:-2}" -ldflags "-s -w" -o "$out/$name" "$pkg"
    )
    mv "$out/$name" "$dest/$name"
    echo "50-kueue-jobset: $name $version built in $(($(date +%s) - start)) s"
  fi
  if [ ! -s "$dest/manifests.yaml" ]; then
    "$KUBECTL" kustomize "$dir/config/default" >"$out/manifests.yaml"
    mv "$out/manifests.yaml" "$dest/manifests.yaml"
  fi
  rmdir "$out"
}

build jobset sigs.k8s.io/jobset "$JOBSET_VERSION" .
build kueue sigs.k8s.io/kueue "$KUEUE_VERSION" ./cmd/kueue
