"""Equal-compute arms: a grid arm with `budget_s: SECONDS` trains for that much wall-clock time on this
machine.  Its number of steps comes from timing the arm's own training once (`calibrate`): a short run of
CALIBRATION_STEPS steps, whose per-step time is read between step SKIP_STEPS and the last (so building
caches, loading towers and the first slow steps do not count).  The result is stored per arm in the grid's
`calibration.json` and reused by every seed, so all seeds of an arm run the same steps and stay paired;
delete the file to measure again.

Steps, not a clock, end the run: the learning-rate schedule then completes as in any other arm, and a
killed arm resumes to the same result."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from locktune.errors import LocktuneError

CALIBRATION = "calibration.json"
CALIBRATION_STEPS = 16
SKIP_STEPS = 4
WARMUP_SHARE = 0.1  # warmup steps as a share of the calibrated steps (the study's base uses 25 of 250)
CHECKPOINTS_PER_ARM = 5  # a killed arm resumes from its last one; each is a full model + optimizer write


def seconds_per_step(log_path: Path, batch_size: int, skip: int = SKIP_STEPS) -> float:
    """Per-step wall time between step `skip` and the last logged step, from train_log.jsonl.  Each entry's
    `pairs_per_s` is cumulative since the training loop started, so step k ended at k * batch / rate."""
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    ended = {e["step"]: e["step"] * batch_size / e["pairs_per_s"] for e in entries if e.get("pairs_per_s")}
    last = max(ended, default=0)
    if skip not in ended or last <= skip:
        raise LocktuneError(f"{log_path}: calibration needs steps {skip} and later logged (got {sorted(ended)})")
    return (ended[last] - ended[skip]) / (last - skip)


def steps_for(budget_s: float, per_step_s: float, minimum: int = 10) -> int:
    """How many steps fit in `budget_s` at `per_step_s`; at least `minimum`."""
    if per_step_s <= 0:
        raise LocktuneError(f"calibration measured {per_step_s} s per step; delete calibration.json and rerun")
    return max(minimum, int(budget_s / per_step_s))


def budget_overrides(steps: int) -> list[str]:
    """The config overrides that make an arm run `steps` steps (warmup a fixed share of them), with at most
    CHECKPOINTS_PER_ARM checkpoints.  Calibration times steps, not checkpoint writes: at the base's every 25
    steps an arm of cheap steps (both towers locked: 4,712 steps in 90 s) would write 188 checkpoints of the
    whole model and spend most of its budget writing them."""
    return [f"train.steps={steps}", f"train.warmup_steps={max(1, round(WARMUP_SHARE * steps))}",
            f"train.checkpoint_every={max(1, math.ceil(steps / CHECKPOINTS_PER_ARM))}"]


def calibrate(grid, arm, out_dir: Path, extra: list[str], log=print) -> dict:
    """The arm's calibration from `out_dir/calibration.json`, measuring it first if it is not there:
    {"budget_s", "seconds_per_step", "steps", "measured_at"}."""
    path = out_dir / CALIBRATION
    known = json.loads(path.read_text()) if path.is_file() else {}
    entry = known.get(arm.name)
    if entry is not None and entry.get("budget_s") == arm.budget_s:
        return entry
    from locktune.train.trainer import train

    scratch = out_dir / f".calibrating-{arm.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    config = grid.run_config(arm, arm.seeds[0], scratch, [*extra, f"train.steps={CALIBRATION_STEPS}",
                                                          "train.warmup_steps=0", "train.log_every=1",
                                                          f"train.checkpoint_every={CALIBRATION_STEPS}"])
    log(f"    calibrating {arm.name}: {CALIBRATION_STEPS} timed steps for a {arm.budget_s:.0f} s budget")
    train(config)
    # Rounded before the steps are derived from it, so the stored entry is self-consistent.
    per_step = round(seconds_per_step(scratch / "train_log.jsonl", config.train.batch_size), 4)
    shutil.rmtree(scratch, ignore_errors=True)
    entry = {"budget_s": arm.budget_s, "seconds_per_step": per_step,
             "steps": steps_for(arm.budget_s, per_step), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "machine_cores": os.cpu_count()}
    known = json.loads(path.read_text()) if path.is_file() else {}
    known[arm.name] = entry
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CALIBRATION}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    log(f"    {arm.name}: {per_step:.3f} s per step -> {entry['steps']} steps")
    return entry
