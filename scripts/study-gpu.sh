#!/usr/bin/env bash
# The round-3 studies (docs/studies/round3.md) on a GPU: the same grids, arms, seeds, steps, batch sizes, data
# and evaluation as the CPU runs, in bf16 at the towers' native resolution (224 px instead of 128).  Steps and
# batches stay the grids' own, so every design keeps its meaning (loss-batch compares batch sizes at the same
# pairs seen; an override of train.steps here would undo that).  The grids run in `make results`' order into one
# folder, so an arm trained by an earlier grid is reused by a later one (runner.find_identical_run).
#
# Not yet run on a GPU (no session that wrote it had one): its time is unknown.  Each call stops after
# STUDY_GPU_LIMIT_S seconds (default 3000); finished arms are kept, so calling it again continues.
# loss-batch's 2-process arms (global-2proc, local-2proc) need two GPUs (one per process); on one GPU the script
# runs its batch arms only and global_beats_local_loss reads "not run".
# (Config overrides go right after the grid file: `locktune ablate` takes its positionals before its options.)
# Smoke test on the CPU (a few steps, one seed, the first two arms of each grid):
#   STUDY_GPU_SMOKE=1 STUDY_GPU_GRIDS=head bash scripts/study-gpu.sh
# Needs the Python packages and data packages of `make setup` (`locktune data check` says what is missing).
# Writes the records and each grid's report under runs/study-gpu/, and runs/study-gpu/RESULTS-gpu.md with the
# records it judged in runs/study-gpu/results/GRID/ (beside it, never the CPU results/ of the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${STUDY_GPU_OUT:-runs/study-gpu}"
ROUND3="towers_r3 towers_scratch text_locked text_towers image_towers loss_batch schedules head multilingual"
read -r -a GRIDS <<< "${STUDY_GPU_GRIDS:-$ROUND3}"
"$PY" -m locktune data check

if [ "${STUDY_GPU_SMOKE:-0}" = 1 ]; then
  OUT="$OUT-smoke"
  for grid in "${GRIDS[@]}"; do
    "$PY" -m locktune ablate "studies/$grid.yaml" train.device=cpu --smoke --out "$OUT"
  done
else
  GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
  if [ "$GPUS" = 0 ]; then
    echo "no CUDA device: this script is for a GPU machine (STUDY_GPU_SMOKE=1 runs its CPU smoke test)" >&2
    exit 1
  fi
  GPU_ARGS=(train.device=cuda train.precision=bf16 model.image_size=0 data.image_workers=8)
  deadline=$(( $(date +%s) + ${STUDY_GPU_LIMIT_S:-3000} ))
  for grid in "${GRIDS[@]}"; do
    left=$(( deadline - $(date +%s) ))
    if [ "$left" -le 10 ]; then
      echo "study-gpu: time limit reached before $grid; run the script again to continue" >&2
      break
    fi
    arms=()
    if [ "$grid" = loss_batch ] && [ "$GPUS" -lt 2 ]; then
      echo "study-gpu: $GPUS GPU: loss-batch runs its batch arms only (its 2-process arms need one GPU each)" >&2
      arms=(--arms batch-16,batch-32,batch-128)
    fi
    timeout -k 10 "$left" "$PY" -m locktune ablate "studies/$grid.yaml" "${GPU_ARGS[@]}" --out "$OUT" "${arms[@]}" || {
      echo "study-gpu: $grid stopped (exit $?); run the script again to continue where it stopped" >&2
      break
    }
  done
fi
reports=()
for grid in "${GRIDS[@]}"; do reports+=("studies/$grid.yaml"); done
"$PY" -m locktune ablate --report-only --out "$OUT" "${reports[@]}" --results "$OUT/RESULTS-gpu.md"
