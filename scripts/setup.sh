#!/usr/bin/env bash
# Installs what rft-operator needs on a fresh Debian machine (idempotent), then builds dist/.
#   bash scripts/setup.sh        everything the test suite needs (CI runs this)
#   bash scripts/setup.sh run    only what `rft run` needs on one machine: npm packages, the python-grader
#                                environment, the fast CPU backend and the SmolLM2 model (no Kubernetes,
#                                NATS, Helm, Prometheus or torch)
# Both profiles end with setup.d/90-rft-on-path.sh: `rft` on the PATH (npm link, or a ~/.local/bin shim).
# Each component's extra needs live in scripts/setup.d/NN-name.sh (apt packages, Python environments, tools);
# they run in name order after `npm ci` (those in EARLY_STEPS and AFTER_NPM_STEPS first, side by side), each
# printing its time. The `run` profile runs the steps listed in RUN_STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-all}
RUN_STEPS="10-grader-python 15-tfjs-node 25-smollm2 90-rft-on-path"
case "$PROFILE" in
  all | run) ;;
  *)
    echo "setup.sh: unknown profile \"$PROFILE\" (use: run, or nothing for everything)" >&2
    exit 2
    ;;
esac

if ! command -v python3 >/dev/null || ! command -v unshare >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv util-linux
fi

# Steps that only download, build and unpack their own things run side by side, each one's output shown when it
# ends: EARLY_STEPS need nothing of npm's and start before `npm ci`; AFTER_NPM_STEPS install into node_modules.
# On a cold machine the network and pip's source builds, not `npm ci`, are the limit.
EARLY_STEPS="10-grader-python 20-model-test-python 22-openai-python 25-smollm2"
AFTER_NPM_STEPS="15-tfjs-node"

wanted() { [ "$PROFILE" = all ] || [[ " $RUN_STEPS " == *" $1 "* ]]; }

run_step() {
  local name=$1 t0=$SECONDS
  bash "scripts/setup.d/$name.sh"
  echo "== setup: $name done in $((SECONDS - t0)) s"
}

LOGS=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$LOGS"' EXIT
pids=()
start_steps() {
  local name
  for name in "$@"; do
    wanted "$name" && [ -e "scripts/setup.d/$name.sh" ] || continue
    echo "== setup: scripts/setup.d/$name.sh (in the background)"
    run_step "$name" >"$LOGS/$name" 2>&1 &
    pids+=("$!:$name")
  done
}

start_steps $EARLY_STEPS
t0=$SECONDS
npm ci --no-audit --no-fund
echo "== setup: npm ci done in $((SECONDS - t0)) s"
start_steps $AFTER_NPM_STEPS

failed=""
for p in "${pids[@]}"; do
  if ! wait "${p%%:*}"; then failed="$failed ${p#*:}"; fi
  cat "$LOGS/${p#*:}"
done
if [ -n "$failed" ]; then
  echo "setup.sh: failed:$failed (their output is above)" >&2
  exit 1
fi

for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  name=$(basename "$step" .sh)
  wanted "$name" || continue
  [[ " $EARLY_STEPS $AFTER_NPM_STEPS " == *" $name "* ]] && continue
  echo "== setup: $step"
  run_step "$name"
done
echo "== setup: $PROFILE profile done in $SECONDS s"
