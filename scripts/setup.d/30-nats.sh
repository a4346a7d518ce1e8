#!/usr/bin/env bash
# nats-server (Debian package) for the ledger service and its fault tests (test/ledger/*-nats.test.ts start it).
set -euo pipefail
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nats-server
fi
