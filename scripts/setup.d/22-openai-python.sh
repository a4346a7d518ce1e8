#!/usr/bin/env bash
# The official OpenAI python client (.venv-openai), the acceptance test of `rft api`: test/api/python-client.test.ts
# runs the RFT guide's python code against a local `rft api`, changing only base_url and api_key.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv-openai/bin/python ]; then
  python3 -m venv .venv-openai
fi
if .venv-openai/bin/python -c "import openai" 2>/dev/null; then
  exit 0
fi
.venv-openai/bin/python -m pip install -q --disable-pip-version-check "openai==3.51.0"
