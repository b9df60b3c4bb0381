"""Equal-compute arms: per-step time read from a training log (hand-made), steps from a budget, the grid
keys (budget_s, design) checked, and a calibration measured once and reused by every seed."""

from __future__ import annotations

import json

import pytest

from locktune.ablate.budget import budget_overrides, seconds_per_step, steps_for
from locktune.ablate.grid import load_grid
from locktune.errors import LocktuneError


def test_seconds_per_step_skips_the_first_steps(tmp_path):
    # batch 10; step k ends at: 1 -> 5 s (slow start), 2 -> 6, 4 -> 8, 8 -> 12 s: 1 s per step from step 4 on
    ends = {1: 5.0, 2: 6.0, 4: 8.0, 8: 12.0}
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": k, "loss": 1.0, "pairs_per_s": k * 10 / t}) + "\n"
                           for k, t in ends.items()))
    assert seconds_per_step(log, batch_size=10, skip=4) == pytest.approx(1.0)
    assert seconds_per_step(log, batch_size=10, skip=1) == pytest.approx(1.0)
    with pytest.raises(LocktuneError, match="calibration needs steps 3"):
        seconds_per_step(log, batch_size=10, skip=3)


def test_steps_for_a_budget():
    assert steps_for(200, 0.8) == 250
    assert steps_for(1, 0.8) == 10  # at least a few steps
    assert budget_overrides(250) == ["train.steps=250", "train.warmup_steps=25", "train.checkpoint_every=50"]
    # Cheap steps never mean hundreds of checkpoint writes: at most five an arm.
    assert budget_overrides(4712)[2] == "train.checkpoint_every=943" and budget_overrides(3)[2] == "train.checkpoint_every=1"
    with pytest.raises(LocktuneError):
        steps_for(200, 0.0)


def test_grid_budget_and_design_keys(tmp_path):
    grid = load_grid("studies/equal_compute.yaml")
    assert grid.design == 2 and all(arm.budget_s == 150 for arm in grid.arms)
    bad = tmp_path / "g.yaml"
    bad.write_text("name: g\nbase: studies/base.yaml\narms: [{name: a}]\n")
    assert load_grid(bad).design == 2  # the only design judged; a grid file without the key is of it
    bad.write_text("name: g\nbase: studies/base.yaml\narms: [{name: a, budget_s: -3}]\n")
    with pytest.raises(LocktuneError, match="budget_s"):
        load_grid(bad)
    bad.write_text("name: g\nbase: studies/base.yaml\ndesign: 3\narms: [{name: a}]\n")
    with pytest.raises(LocktuneError, match="design should be 2"):
        load_grid(bad)


@pytest.mark.slow
def test_calibration_measures_once_and_every_seed_reuses_it(tmp_path):
    """A budget arm's steps come from timing its own first steps once (tiny smoke settings here); the
    entry is kept in calibration.json and a second call (another seed) reads it instead of measuring."""
    from locktune.ablate.budget import CALIBRATION, calibrate
    from locktune.ablate.runner import SMOKE

    grid = load_grid("studies/equal_compute.yaml")
    arm = grid.arm("LU-budget")
    lines = []
    entry = calibrate(grid, arm, tmp_path, list(SMOKE), log=lines.append)
    assert entry["budget_s"] == 150 and entry["seconds_per_step"] > 0
    assert entry["steps"] == steps_for(150, entry["seconds_per_step"])
    assert json.loads((tmp_path / CALIBRATION).read_text())["LU-budget"] == entry
    assert not list(tmp_path.glob(".calibrating-*")), "the timing run's folder is removed"
    again = calibrate(grid, arm, tmp_path, list(SMOKE), log=lines.append)
    assert again == entry and sum("calibrating" in line for line in lines) == 1


def test_a_budget_arms_report_names_its_budget_and_calibrated_steps(tmp_path):
    from locktune.ablate.report import grid_section

    grid = load_grid("studies/equal_compute.yaml")
    calibration = {"budget_s": 150.0, "machine_cores": 2, "seconds_per_step": 0.5674, "steps": 264}
    records = [{"grid": grid.name, "arm": "LU-budget", "seed": seed, "order": seed, "label": "", "design": 2,
                "calibration": calibration, "train": {"seconds": 148.0, "final_loss": 0.3, "curve": []},
                "eval": {"bench": {"kind": "classification", "top1": 0.3, "mean_per_class_recall": 0.3,
                                   "chance_top1": 0.1, "images": 10}}, "eval_seconds": 1.0, "config": {}}
               for seed in (0, 1)]
    text = "\n".join(grid_section(grid, records, tmp_path, tmp_path, plots=False))
    assert "`LU-budget`: `model.setting=LU` (150 s budget: 264 steps at 0.57 s/step, timed once)" in text
