#!/usr/bin/env bash
# Chromium (Debian package), headless, for test/governance/governed-example.test.ts: it renders the auditor's
# HTML report (`rft audit report --format html`), screenshots it and checks what the page shows.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium
fi
