#!/usr/bin/env bash
# gpu-check.sh — the device check, on a Linux x86_64 machine with an NVIDIA GPU and its driver (libcuda.so.1),
# from the repository root. Reports:
#   1. the GPU (nvidia-smi) and the device each backend sees;
#   2. fp32 matMul TFLOP/s, 1024..8192, on `tensorflow` (tfjs-node-gpu, CUDA) and on `webgpu` (Dawn over Vulkan);
#   3. one SmolLM2 training step (loss + grads + Adam, batch 4 × 128) on each, when a model directory is given.
# Usage:
#   GPU=1 bash scripts/setup.d/15-tfjs-node.sh            # once: tfjs-node-gpu + CUDA 12 wheels (~3.4 GB)
#   npm install --no-save webgpu @tensorflow/tfjs-backend-webgpu@4.22.0   # for the webgpu half (optional)
#   rft import gguf ~/.cache/rft/models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/smollm2   # the model (optional)
#   bash scripts/gpu-check.sh [MODEL_DIR]                 # or RFT_GPU_CHECK_MODEL=DIR
# Knobs: RFT_GPU_CHECK_BACKENDS [tensorflow webgpu], RFT_GPU_CHECK_SIZES [1024,2048,4096,8192],
# RFT_GPU_CHECK_TIMEOUT [300 s per backend]. Exit status: 1 when the tensorflow backend did not place tensors on
# the GPU (it falls back to the CPU silently: the TF log lines above then say which library was missing), 2 when
# tfjs-node-gpu is not set up; a failing webgpu half is reported, not fatal (its packages are optional).
# Note: `npm install --no-save webgpu ...` prunes tfjs-node-gpu again (both are outside the lockfile): install both
# in one command, or re-run the setup script after it (its caches make that quick).
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-${RFT_GPU_CHECK_MODEL:-}}
BACKENDS=${RFT_GPU_CHECK_BACKENDS:-tensorflow webgpu}
SIZES=${RFT_GPU_CHECK_SIZES:-1024,2048,4096,8192}
LIMIT=${RFT_GPU_CHECK_TIMEOUT:-300}
PKG=node_modules/@tensorflow/tfjs-node-gpu
DEPS=$PWD/$PKG/deps

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
else
  echo "nvidia-smi: not found (no NVIDIA driver tools on this machine)"
fi
if [[ -n $MODEL && ! -f $MODEL/config.json ]]; then
  echo "gpu-check: $MODEL has no config.json (make one with: rft import gguf FILE.gguf --out DIR)" >&2
  exit 2
fi
[[ -n $MODEL ]] || echo "gpu-check: no model directory given: the training step is skipped"

# TF must not reserve (almost) all GPU memory at start-up; warnings stay on (they say why a GPU was not used).
export TF_FORCE_GPU_ALLOW_GROWTH=true
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
# The TF libraries find deps/nvidia/*/lib through their RUNPATH ($ORIGIN/../nvidia/...); LD_LIBRARY_PATH is a
# second way in, for libraries dlopen()ed from objects whose RUNPATH does not name them (curand, nvrtc).
if [[ -d $DEPS/nvidia ]]; then
  export LD_LIBRARY_PATH=$(ls -d "$DEPS"/nvidia/*/lib | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PATH=$DEPS/nvidia/cuda_nvcc/bin:$PATH
fi

status=0
for b in $BACKENDS; do
  echo "== $b"
  if [[ $b == tensorflow && ! -f $DEPS/.from-wheel ]]; then
    echo "gpu-check: $PKG is not set up: run GPU=1 bash scripts/setup.d/15-tfjs-node.sh" >&2
    status=2
    continue
  fi
  args=(--backend "$b" --sizes "$SIZES")
  [[ -n $MODEL ]] && args+=(--model "$MODEL")
  out=$(timeout "$LIMIT" npx tsx bench/device.ts "${args[@]}" | tee /dev/stderr)
  rc=${PIPESTATUS[0]}
  if [[ $rc != 0 ]]; then
    echo "gpu-check: $b failed (exit $rc$([[ $rc == 124 ]] && echo ", timed out after ${LIMIT}s"))"
    [[ $b == tensorflow ]] && status=1
  elif [[ $b == tensorflow ]] && ! grep -q '"isUsingGpuDevice":true' <<<"$out"; then
    echo "gpu-check: tfjs-node-gpu fell back to the CPU: see TF's log lines above (libcuda, libcudart, libcudnn ...)"
    status=1
  fi
done
exit $status
