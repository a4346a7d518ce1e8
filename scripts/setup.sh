#!/usr/bin/env bash
# Installs what rft-operator and its tests need on a fresh Debian machine (idempotent):
# Debian packages, the npm dependencies (builds dist/ through `prepare`), and the Python environment
# the python-grader sandbox uses (.venv, with the grader packages OpenAI's grader image has).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v unshare >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi

npm ci --no-audit --no-fund

bash scripts/setup-python.sh
