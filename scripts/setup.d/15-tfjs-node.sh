#!/usr/bin/env bash
# The fast CPU backend (`tensorflow` = @tensorflow/tfjs-node 4.22.0), installed from package registries only.
#
# tfjs-node's own install script downloads libtensorflow 2.9 and a prebuilt addon from cloud buckets, which
# machines that reach only npm and PyPI cannot do. This script does the same from registry packages:
#   1. npm install @tensorflow/tfjs-node@4.22.0 --no-save --ignore-scripts (skipped when that version is there);
#   2. pip download the TensorFlow wheel (`tensorflow-cpu`; `tensorflow` with GPU=1) into ~/.cache/rft/wheels
#      (no pip install: the wheel is only unzipped, and its two libraries do not link libpython);
#   3. unpack libtensorflow_cc.so.2 + libtensorflow_framework.so.2 (the TF C API and eager C API) and the
#      C API headers once into ~/.cache/rft/tfjs-node/<wheel>/, then hard-link (or copy) them into the
#      package's deps/ under the names its binding.gyp links against;
#   4. build the N-API addon with node-gyp against the installed Node's own headers (--nodedir = node's prefix,
#      which has include/node/common.gypi: nothing is downloaded); the built addon is cached next to the
#      unpacked wheel, keyed by wheel, package version and Node-API version, so a re-run after `npm ci` only
#      copies it back;
#   5. GPU=1 only: pip download the nvidia-*-cu12 wheels named by the TF wheel's `and-cuda` extra and unpack
#      their libraries into deps/nvidia/, where the TF libraries' RUNPATH ($ORIGIN/../nvidia/*/lib) looks;
#   6. smoke test: load the package, run a matMul, print the TF version and whether a GPU is used.
#
# Why --no-save rather than a package.json/lockfile entry: npm cannot skip one package's install script, and
# tfjs-node's script fails offline. As a dependency it would break `npm ci`; as an optionalDependency npm spends
# ~45 s on failed downloads and then silently drops it (exit code 0). So the package stays out of the lockfile
# and this script puts it back after every `npm ci` (setup.sh runs `npm ci`, then setup.d/*.sh in order). A later
# `npm ci`, `npm install` or another `--no-save` install prunes it again: re-run this script (~10-20 s once the
# caches are warm: npm install from npm's cache, hard links, the cached addon, the smoke test).
#
# TF version: 2.21.0 by default. TF 2.18+ returns zeros for `Round` on int32; the project never rounds an
# int tensor, and trainer/model/backend.ts guards the kernel anyway (round of an integer is the identity), with
# a test. 2.21 rather than 2.16.2 because the CUDA wheel of 2.21 carries sm_90 SASS (H100/H200 run native code,
# no PTX JIT at start-up) and CPU and GPU should run the same TF. TF_VERSION=2.16.2 works too (same C ABI).
#
# Usage:  bash scripts/setup.d/15-tfjs-node.sh            # CPU: @tensorflow/tfjs-node + tensorflow-cpu
#         GPU=1 bash scripts/setup.d/15-tfjs-node.sh      # CUDA 12: @tensorflow/tfjs-node-gpu + tensorflow + nvidia-*
# Knobs (defaults in brackets): TF_VERSION [2.21.0], TFJS_NODE_VERSION [4.22.0], TF_WHEEL_PY [3.11] (any CPython
# tag works: only the .so files are used), RFT_CACHE [~/.cache/rft], FORCE_BUILD [0], NODE_PREFIX [node's prefix],
# PYTHON [python3], RFT_SKIP_TFJS_NODE [0] (1 = do nothing: the `wasm` backend will be used, with a notice).
set -euo pipefail
cd "$(dirname "$0")/../.."
PROJECT_DIR=$PWD

say() { printf '== 15-tfjs-node: %s\n' "$*" >&2; }
die() {
  printf '15-tfjs-node: %s\n' "$*" >&2
  exit 1
}

if [[ ${RFT_SKIP_TFJS_NODE:-0} == 1 ]]; then
  say "RFT_SKIP_TFJS_NODE=1: not installing the tensorflow backend (rft will use wasm)"
  exit 0
fi

GPU=${GPU:-0}
if [[ $GPU == 1 ]]; then
  PKG=@tensorflow/tfjs-node-gpu
  TF_WHEEL=tensorflow
else
  PKG=@tensorflow/tfjs-node
  TF_WHEEL=tensorflow-cpu
fi
TFJS_NODE_VERSION=${TFJS_NODE_VERSION:-4.22.0}
TF_VERSION=${TF_VERSION:-2.21.0}
TF_WHEEL_PY=${TF_WHEEL_PY:-3.11}
RFT_CACHE=${RFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rft}
WHEEL_DIR=$RFT_CACHE/wheels
FORCE_BUILD=${FORCE_BUILD:-0}
PYTHON=${PYTHON:-python3}

[[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] || die "only Linux x86_64 is handled (the TF wheels are manylinux x86_64)"
# The compiler for the addon (Debian packages, as the other setup.d steps install theirs).
if ! command -v g++ >/dev/null || ! command -v make >/dev/null; then
  command -v apt-get >/dev/null || die "needs g++ and make on PATH (to build the addon)"
  say "apt-get install g++ make"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends g++ make >&2
fi
for t in node npm "$PYTHON" g++ make; do command -v "$t" >/dev/null || die "needs $t on PATH"; done
# pip is used only for `pip download` and to resolve the and-cuda extra; without one for $PYTHON (Debian's python3
# has none unless python3-pip is installed), a venv in the cache provides it.
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  PIP_VENV=$RFT_CACHE/pip-venv
  [[ -x $PIP_VENV/bin/python ]] || "$PYTHON" -m venv "$PIP_VENV" || die "$PYTHON has no pip and cannot make a venv (install python3-venv)"
  PYTHON=$PIP_VENV/bin/python
fi
NODE_PREFIX=${NODE_PREFIX:-$(cd "$(dirname "$(readlink -f "$(command -v node)")")/.." && pwd)}
[[ -f $NODE_PREFIX/include/node/common.gypi && -f $NODE_PREFIX/include/node/node_api.h ]] ||
  die "no Node headers under $NODE_PREFIX/include/node (Debian/NodeSource nodejs and nodejs.org tarballs ship them); set NODE_PREFIX"
mkdir -p "$WHEEL_DIR"

# ---------------------------------------------------------------------------------------------------- 1. npm
PKG_DIR=$PROJECT_DIR/node_modules/$PKG
installed_version() { node -p "try{require('$PKG_DIR/package.json').version}catch(e){''}"; }
if [[ $(installed_version) != "$TFJS_NODE_VERSION" ]]; then
  say "npm install --no-save --ignore-scripts $PKG@$TFJS_NODE_VERSION"
  npm install --no-save --ignore-scripts --no-audit --no-fund "$PKG@$TFJS_NODE_VERSION" >&2
fi
[[ $(installed_version) == "$TFJS_NODE_VERSION" ]] || die "could not install $PKG@$TFJS_NODE_VERSION"
PKG_DIR=$(cd "$PKG_DIR" && pwd -P)
DEPS=$PKG_DIR/deps

# ---------------------------------------------------------------------------------------------------- 2. wheel
find_wheel() { ls -1 "$WHEEL_DIR"/"${1//-/_}"-"$2"-*.whl 2>/dev/null | head -n1 || true; }
TF_WHL=$(find_wheel "$TF_WHEEL" "$TF_VERSION")
if [[ -z $TF_WHL ]]; then
  say "pip download $TF_WHEEL==$TF_VERSION into $WHEEL_DIR"
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$TF_WHEEL_PY" \
    --dest "$WHEEL_DIR" "$TF_WHEEL==$TF_VERSION" >&2
  TF_WHL=$(find_wheel "$TF_WHEEL" "$TF_VERSION")
fi
[[ -n $TF_WHL ]] || die "no wheel for $TF_WHEEL==$TF_VERSION in $WHEEL_DIR"
WHEEL_NAME=$(basename "$TF_WHL" .whl)

# ---------------------------------------------------------------------------------------------------- 3. unpack
UNPACKED=$RFT_CACHE/tfjs-node/$WHEEL_NAME
if [[ ! -f $UNPACKED/.complete ]]; then
  say "unpacking the TF libraries and C API headers of $WHEEL_NAME into $UNPACKED"
  rm -rf "$UNPACKED" && mkdir -p "$UNPACKED/lib" "$UNPACKED/include"
  "$PYTHON" - "$TF_WHL" "$UNPACKED" <<'PY'
import os, sys, zipfile
whl, out_dir = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(whl)
names = set(z.namelist())
libs = ["tensorflow/libtensorflow_cc.so.2", "tensorflow/libtensorflow_framework.so.2"]
missing = [l for l in libs if l not in names]
if missing:
    sys.exit("this wheel has no %s (before TF 2.1x the C API lived in _pywrap_tensorflow_internal.so, which "
             "needs libpython): use TF_VERSION >= 2.16" % ", ".join(missing))
for l in libs:
    dst = os.path.join(out_dir, "lib", os.path.basename(l))
    with z.open(l) as src, open(dst + ".part", "wb") as out:
        while True:
            b = src.read(1 << 24)
            if not b:
                break
            out.write(b)
    os.chmod(dst + ".part", 0o755)
    os.replace(dst + ".part", dst)
# Only the C API's headers (the binding includes 14 of them; these folders are ~1.5 MB, the full tree ~290 MB).
keep = ("tensorflow/c/", "tensorflow/core/platform/", "tsl/platform/", "xla/tsl/c/", "tsl/c/",
        "tensorflow/tsl/platform/", "tensorflow/tsl/c/")
prefix = "tensorflow/include/"
n = 0
for name in names:
    if name.startswith(prefix) and name.endswith(".h") and name[len(prefix):].startswith(keep):
        dst = os.path.join(out_dir, "include", name[len(prefix):])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with z.open(name) as src, open(dst, "wb") as out:
            out.write(src.read())
        n += 1
print("unpacked 2 libraries and %d headers" % n, file=sys.stderr)
PY
  touch "$UNPACKED/.complete"
fi

# Hard links keep a re-run after `npm ci` cheap (no 850 MB copy); they must be real files, not symlinks,
# because the libraries' RUNPATH ($ORIGIN/../nvidia/...) is resolved from the folder of the path opened.
link_tree() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }
if [[ ! -f $DEPS/.from-wheel || $(cat "$DEPS/.from-wheel") != "$WHEEL_NAME" ]]; then
  say "linking the TF libraries into $DEPS"
  rm -rf "$DEPS" && mkdir -p "$DEPS"
  link_tree "$UNPACKED/lib" "$DEPS/lib"
  link_tree "$UNPACKED/include" "$DEPS/include"
  # The names binding.gyp links against (-ltensorflow -ltensorflow_framework); the addon records the sonames
  # libtensorflow_cc.so.2 / libtensorflow_framework.so.2 and finds them through RUNPATH $ORIGIN/../../deps/lib.
  # libtensorflow.so.2.9.1 is what the package's scripts/install.js checks for, so `npm rebuild` skips its download.
  ln -sf libtensorflow_cc.so.2 "$DEPS/lib/libtensorflow.so"
  ln -sf libtensorflow_cc.so.2 "$DEPS/lib/libtensorflow.so.2"
  ln -sf libtensorflow_cc.so.2 "$DEPS/lib/libtensorflow.so.2.9.1"
  ln -sf libtensorflow_framework.so.2 "$DEPS/lib/libtensorflow_framework.so"
  ln -sf libtensorflow_framework.so.2 "$DEPS/lib/libtensorflow_framework.so.2.9.1"
  echo "$WHEEL_NAME" >"$DEPS/.from-wheel"
fi

# ---------------------------------------------------------------------------------------------------- 5. CUDA
if [[ $GPU == 1 ]]; then
  CUDA_REQS=$WHEEL_DIR/cuda-reqs-$TF_WHEEL-$TF_VERSION.txt
  if [[ ! -s $CUDA_REQS ]]; then
    say "resolving the nvidia-* wheels of $TF_WHEEL[and-cuda]==$TF_VERSION (pinned in $CUDA_REQS; edit it to pin others)"
    REPORT=$(mktemp)
    TGT=$(mktemp -d)
    "$PYTHON" -m pip install --dry-run --ignore-installed --only-binary=:all: --python-version "$TF_WHEEL_PY" \
      --target "$TGT" --report "$REPORT" --quiet "$TF_WHEEL[and-cuda]==$TF_VERSION" >&2
    rmdir "$TGT" 2>/dev/null || true
    "$PYTHON" - "$REPORT" >"$CUDA_REQS.part" <<'PY'
import json, sys
for i in json.load(open(sys.argv[1]))["install"]:
    m = i["metadata"]
    if m["name"].lower().startswith("nvidia-"):
        print("%s==%s" % (m["name"], m["version"]))
PY
    rm -f "$REPORT"
    mv "$CUDA_REQS.part" "$CUDA_REQS"
  fi
  CUDA_KEY=$(sort "$CUDA_REQS" | sha256sum | cut -c1-16)
  NV_UNPACKED=$RFT_CACHE/tfjs-node/nvidia-$CUDA_KEY
  if [[ ! -f $NV_UNPACKED/.complete ]]; then
    say "pip download the nvidia-* wheels ($(wc -l <"$CUDA_REQS") of them, ~2.8 GB) into $WHEEL_DIR/cuda"
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$TF_WHEEL_PY" \
      --dest "$WHEEL_DIR/cuda" -r "$CUDA_REQS" >&2
    say "unpacking their libraries into $NV_UNPACKED"
    rm -rf "$NV_UNPACKED" && mkdir -p "$NV_UNPACKED"
    "$PYTHON" - "$WHEEL_DIR/cuda" "$CUDA_REQS" "$NV_UNPACKED" <<'PY'
import glob, os, re, sys, zipfile
wdir, reqs, out_dir = sys.argv[1:4]
for line in open(reqs):
    name, ver = line.strip().split("==")
    norm = re.sub(r"[-_.]+", "_", name).lower()
    whl = [w for w in glob.glob(os.path.join(wdir, "*.whl"))
           if os.path.basename(w).lower().startswith("%s-%s-" % (norm, ver))]
    if not whl:
        sys.exit("missing wheel for %s" % line.strip())
    z = zipfile.ZipFile(whl[0])
    for info in z.infolist():
        n = info.filename  # keep shared libraries and the tools XLA may call (ptxas, nvlink, libdevice)
        if not n.startswith("nvidia/") or n.endswith("/"):
            continue
        if not (re.search(r"\.so(\.\d+)*$", n) or "/bin/" in n or n.endswith(".bc")):
            continue
        dst = os.path.join(out_dir, n[len("nvidia/"):])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with z.open(info) as src, open(dst, "wb") as out:
            while True:
                b = src.read(1 << 24)
                if not b:
                    break
                out.write(b)
        os.chmod(dst, 0o755)
print("unpacked", len(open(reqs).read().split()), "wheels", file=sys.stderr)
PY
    touch "$NV_UNPACKED/.complete"
  fi
  if [[ ! -f $DEPS/.cuda-from-wheels || $(cat "$DEPS/.cuda-from-wheels") != "$CUDA_KEY" ]]; then
    say "linking the CUDA libraries into $DEPS/nvidia (the TF libraries' RUNPATH has \$ORIGIN/../nvidia/<lib>/lib)"
    rm -rf "$DEPS/nvidia"
    mkdir -p "$DEPS/nvidia"
    for d in "$NV_UNPACKED"/*/; do link_tree "${d%/}" "$DEPS/nvidia/$(basename "$d")"; done
    echo "$CUDA_KEY" >"$DEPS/.cuda-from-wheels"
  fi
fi

# ---------------------------------------------------------------------------------------------------- 4. addon
NAPI=$(node -p "Math.max(...require('$PKG_DIR/package.json').binary.napi_versions.filter((v) => v <= +process.versions.napi))")
ADDON=$PKG_DIR/lib/napi-v$NAPI/tfjs_binding.node
CACHED_ADDON=$UNPACKED/addon-${PKG#@tensorflow/}-$TFJS_NODE_VERSION-napi-v$NAPI-node$(node -p 'process.versions.modules').node
if [[ $FORCE_BUILD == 1 || ! -f $CACHED_ADDON ]]; then
  rm -f "$ADDON"
  PRE_GYP=$(cd "$PKG_DIR" && node -p "require.resolve('@mapbox/node-pre-gyp/bin/node-pre-gyp')")
  say "building the addon: node-pre-gyp install --build-from-source --nodedir=$NODE_PREFIX (Node-API v$NAPI)"
  (cd "$PKG_DIR" && node "$PRE_GYP" install --build-from-source --nodedir="$NODE_PREFIX" >&2)
  [[ -f $ADDON ]] || die "the build produced no $ADDON"
  cp "$ADDON" "$CACHED_ADDON.part" && mv "$CACHED_ADDON.part" "$CACHED_ADDON"
elif ! cmp -s "$CACHED_ADDON" "$ADDON"; then
  mkdir -p "$(dirname "$ADDON")"
  cp "$CACHED_ADDON" "$ADDON"
fi

# ---------------------------------------------------------------------------------------------------- 6. smoke test
say "smoke test"
TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-0} node -e "
const tf = require('$PKG');
const b = tf.backend();
const c = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5, 6], [7, 8]])).arraySync();
if (JSON.stringify(c) !== '[[19,22],[43,50]]') { console.error('wrong matMul result', c); process.exit(1); }
console.error(JSON.stringify({ package: '$PKG', backend: tf.getBackend(), tensorflow: b.binding.TF_Version,
  gpu: b.isUsingGpuDevice, wheel: '$WHEEL_NAME' }));
" || die "the smoke test failed: $PKG does not load (see above); FORCE_BUILD=1 rebuilds the addon"
