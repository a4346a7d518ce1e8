#!/usr/bin/env bash
# The whole example on one machine: a small random model, an SFT warm-start, then RFT on digit sorting.
# Takes a few minutes on a laptop CPU. Outputs land in examples/sort-digits/out/.
set -euo pipefail
cd "$(dirname "$0")"
RFT="node ../../dist/cli/rft.js"
[ -f ../../dist/cli/rft.js ] || RFT="npx tsx ../../cli/rft.ts"

[ -d base ] || $RFT init-model --arch llama --layers 2 --hidden 128 --heads 4 --kv-heads 2 --vocab byte --out base
$RFT run sft.yaml --out out/sft
$RFT run rft.yaml --out out/rft
