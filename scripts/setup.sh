#!/usr/bin/env bash
# Installs what rft-operator needs on a fresh Debian machine (idempotent), then builds dist/.
#   bash scripts/setup.sh        everything the test suite needs (CI runs this)
#   bash scripts/setup.sh run    only what `rft run` needs on one machine: npm packages, the python-grader
#                                environment, the fast CPU backend and the SmolLM2 model (no Kubernetes,
#                                NATS, Helm, Prometheus or torch)
# Both profiles end with setup.d/90-rft-on-path.sh: `rft` on the PATH (npm link, or a ~/.local/bin shim).
# Each component's extra needs live in scripts/setup.d/NN-name.sh (apt packages, Python environments, tools);
# they run in name order after `npm ci`. The `run` profile runs the steps listed in RUN_STEPS.
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

npm ci --no-audit --no-fund

for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  name=$(basename "$step" .sh)
  if [ "$PROFILE" = run ] && [[ " $RUN_STEPS " != *" $name "* ]]; then continue; fi
  echo "== setup: $step"
  bash "$step"
done
