#!/usr/bin/env bash
# The Python environment for python graders (.venv): the packages of OpenAI's grader image that install here.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r grader-sidecar/python/requirements.txt
