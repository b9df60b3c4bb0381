#!/usr/bin/env bash
# The tower-settings study (design 2) on one GPU: the same grid, arms, seeds, data and evaluation as the
# CPU run, at the towers' native resolution (224 px) and 20 passes over the 1,000 training pairs
# (312 steps of 64) instead of 4, in bf16.  Planned to fit in 8 minutes on one H200:
#   UU x5 + uu x3 at ~15 s each, the locked arms (LU x5, Lu x3, LL x3) at ~5 s, evaluation ~10-20 s per arm
#   (an estimate from the CPU timings, not a measurement).
# Not yet run on a GPU (none was lent to the session that wrote it); smoke-tested on CPU:
#   STUDY_GPU_SMOKE=1 bash scripts/study-gpu.sh
# Needs the Python packages and data packages of `make setup` (`locktune data check` says what is missing).
# Writes runs/study-gpu/ (records, reports, plots) and RESULTS-gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${STUDY_GPU_OUT:-runs/study-gpu}"
"$PY" -m locktune data check
if [ "${STUDY_GPU_SMOKE:-0}" = 1 ]; then
  exec "$PY" -m locktune ablate studies/towers.yaml --smoke --out "$OUT-smoke" train.device=cpu
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for a GPU machine')"
exec timeout -k 10 480 "$PY" -m locktune ablate studies/towers.yaml --out "$OUT" \
  train.device=cuda train.precision=bf16 model.image_size=0 \
  train.batch_size=64 train.steps=312 train.warmup_steps=31 train.checkpoint_every=312 \
  data.image_workers=8 --results RESULTS-gpu.md
