#!/usr/bin/env bash
# Is a slower study the machine or the code?  The same LU training (the study base, STEPS steps of 32 pairs) at
# two commits, interleaved ROUNDS times in one run on one machine: the training seconds of each, side by side.
# Each commit is checked out into a temporary worktree and run with PYTHONPATH at its src/ and this checkout's
# virtual environment (the embedding cache is shared, so neither builds it inside the timing).
#
#   bash benchmarks/lu_steps_across_commits.sh 058fa7a HEAD          # STEPS=40 ROUNDS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: lu_steps_across_commits.sh OLD_COMMIT NEW_COMMIT}
NEW=${2:?usage: lu_steps_across_commits.sh OLD_COMMIT NEW_COMMIT}
STEPS=${STEPS:-40}
ROUNDS=${ROUNDS:-2}
PY=$PWD/.venv/bin/python
export LOCKTUNE_NPM_PREFIX=${LOCKTUNE_NPM_PREFIX:-$PWD/.deps/npm}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true; git worktree remove --force "$work/new" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add -q --detach "$work/old" "$OLD"
git worktree add -q --detach "$work/new" "$NEW"
echo "commit,round,steps,training_s"
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    log="$work/$side-$round.log"
    PYTHONPATH="$work/$side/src" "$PY" -m locktune train --config studies/base.yaml model.setting=LU \
      "train.steps=$STEPS" "train.warmup_steps=$((STEPS < 4 ? 0 : 4))" "run_dir=$work/run-$side-$round" \
      eval.plots=false > "$log" 2>&1 || { tail -5 "$log"; echo "training at $side failed" >&2; exit 1; }
    seconds=$(grep -o 'done in [0-9hms]*' "$log" | tail -1 | sed 's/done in //' || true)
    commit=$([ "$side" = old ] && echo "$OLD" || echo "$NEW")
    echo "$commit,$round,$STEPS,$seconds"
  done
done
