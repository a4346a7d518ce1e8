#!/usr/bin/env bash
# Regenerates test/fixtures/similarity.json: reference scores for the text_similarity metrics
# from the Python libraries (pinned below; rapidfuzz and nltk as in OpenAI's grader image), in a private venv at .venv-reference/ (gitignored).
# Needs python3 (3.9+) and PyPI. Usage: bash test/reference/make-similarity-fixture.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-reference
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  rapidfuzz==3.10.1 sacrebleu==2.4.3 nltk==3.9.1 rouge-score==0.1.2

"$VENV/bin/python" test/reference/similarity_reference.py test/fixtures/similarity.json
