#!/usr/bin/env bash
# The Python environment for python graders (.venv): the 16 packages of OpenAI's grader image 2025-05-08 at its
# versions (grader-sidecar/python/requirements.txt). scikit-bio 0.6.3 and rouge-score 0.1.2 come as source only
# for this Python: pip builds them (a C compiler; a few minutes the first time). NLTK's data corpora are on no
# registry reachable here (grader-sidecar/python/README.md "Packages").
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r grader-sidecar/python/requirements.txt
