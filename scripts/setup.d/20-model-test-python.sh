#!/usr/bin/env bash
# The Python reference for the model tests (.venv-model-test): transformers + torch + safetensors, used by
# test/model/reference.test.ts to load our saved models and compare logits with transformers' forward pass,
# and gguf (llama.cpp's gguf-py) + accelerate (transformers' GGUF loader needs it) by test/model/gguf.test.ts:
# transformers' GGUF loading and reference quantization; peft by test/model/lora.test.ts (PEFT adapters load with equal outputs).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv-model-test/bin/python ]; then
  python3 -m venv .venv-model-test
fi
if .venv-model-test/bin/python -c "import torch, transformers, safetensors, gguf, accelerate, peft" 2>/dev/null; then
  exit 0
fi
.venv-model-test/bin/python -m pip install -q --disable-pip-version-check \
  "torch==2.15.0" "transformers==5.23.0" "safetensors==0.8.0" "gguf==0.19.0" "accelerate==1.15.0" "peft==0.21.2" "numpy"
