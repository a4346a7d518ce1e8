#!/usr/bin/env bash
# Installs what rft-operator and its tests need on a fresh Debian machine (idempotent), then builds dist/.
# Each component's extra needs live in scripts/setup.d/NN-name.sh (apt packages, Python environments, tools);
# they run in name order after `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null || ! command -v unshare >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv util-linux
fi

npm ci --no-audit --no-fund

for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  echo "== setup: $step"
  bash "$step"
done
