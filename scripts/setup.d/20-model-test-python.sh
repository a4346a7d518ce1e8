#!/usr/bin/env bash
# The Python reference for the model tests (.venv-model-test): transformers + torch + safetensors, used by
# test/model/reference.test.ts to load our saved models and compare logits with transformers' forward pass,
# and gguf (llama.cpp's gguf-py) + accelerate (transformers' GGUF loader needs it) by test/model/gguf.test.ts:
# transformers' GGUF loading and reference quantization; peft by test/model/lora.test.ts (PEFT adapters load with equal outputs);
# and model-signing (OpenSSF's `model_signing`, with pyOpenSSL, which its CLI imports but does not declare) by
# test/governance/model-signing.test.ts: the upstream verifier of the model signatures `rft audit sign-model` writes.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv-model-test/bin/python ]; then
  python3 -m venv .venv-model-test
fi
if .venv-model-test/bin/python -c "import torch, transformers, safetensors, gguf, accelerate, peft, model_signing, OpenSSL" 2>/dev/null; then
  exit 0
fi
.venv-model-test/bin/python -m pip install -q --disable-pip-version-check \
  "torch==2.15.0" "transformers==5.23.0" "safetensors==0.8.0" "gguf==0.19.0" "accelerate==1.15.0" "peft==0.21.2" "numpy" \
  "model-signing==1.1.1" "pyOpenSSL==26.4.0"
