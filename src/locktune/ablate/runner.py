"""Run a grid: every arm x seed trained (in this process, or under torchrun for multi-process arms),
evaluated on the grid's suite, and recorded as `ARM-sSEED/arm.json`.  A finished arm is never rerun; a
killed grid resumes (a half-trained arm continues from its last checkpoint)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import yaml

from locktune.ablate.budget import budget_overrides, calibrate
from locktune.ablate.grid import Arm, Grid
from locktune.ablate.records import RECORD, write_record
from locktune.config import RunConfig
from locktune.errors import LocktuneError

# `--smoke`: every grid's machinery end to end in seconds (few pairs, tiny images, two steps).
SMOKE = ["train.steps=2", "train.warmup_steps=0", "train.batch_size=8", "train.checkpoint_every=1",
         "data.max_pairs_per_source=24", "model.image_size=32", "model.text_width=32", "model.text_layers=1",
         "model.text_heads=2", "model.text_vocab_size=300", "train.log_every=1"]
SMOKE_EVAL_IMAGES = 40


@dataclasses.dataclass
class GridRun:
    grid: Grid
    out_dir: Path
    records: list[dict]
    trained: list[str]  # runs trained (or finished) by this call
    reused: list[str]  # runs whose record was already there


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _comparable(config: dict) -> dict:
    from locktune.config import upgrade_config_dict

    # Records and run folders written before a key was renamed or removed compare under today's names.
    return {k: v for k, v in upgrade_config_dict(config).items() if k != "run_dir"}


def _check_same_config(run_dir: Path, config: RunConfig) -> None:
    """A run folder belongs to one config: resuming it under another would mix two experiments."""
    saved = run_dir / "config.yaml"
    if saved.is_file():
        from locktune.config import upgrade_config_dict

        before = upgrade_config_dict(yaml.safe_load(saved.read_text()))
        if _comparable(before) != _comparable(config.to_dict()):
            changed = sorted(f"{section}.{key}" for section, values in config.to_dict().items()
                             if isinstance(values, dict) for key, value in values.items()
                             if before.get(section, {}).get(key) != value)
            raise LocktuneError(f"{run_dir} was run with another config (changed: {', '.join(changed) or '?'}); "
                                "delete that folder to rerun the arm, or give the grid another --out")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _train_arm(config: RunConfig, run_dir: Path, processes: int) -> dict:
    """Train (or continue) one arm; -> {"seconds", "image_forward_passes"}."""
    started = time.time()
    if processes == 1:
        from locktune.train.trainer import train

        result = train(config, resume=True)
        return {"seconds": round(time.time() - started, 1), "image_forward_passes": result.image_forward_passes,
                "skipped_images": len(result.skipped_images)}
    threads = max(1, (os.cpu_count() or 1) // processes)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master_port", str(_free_port()), "-m", "locktune", "train", "--config", str(run_dir / "config.yaml"),
           "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (run_dir / "torchrun.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise LocktuneError(f"torchrun training of {run_dir} failed (exit {done.returncode}); last lines:\n"
                            + "\n".join((done.stdout + done.stderr).splitlines()[-15:])
                            + f"\nfull log: {run_dir / 'torchrun.log'}")
    return {"seconds": round(time.time() - started, 1), "image_forward_passes": None, "skipped_images": None}


def _training_curve(run_dir: Path) -> list[list[float]]:
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    by_step = {row["step"]: row["loss"] for row in rows}  # a resumed run may log a step twice
    return [[step, by_step[step]] for step in sorted(by_step)]


def _tasks(grid: Grid, max_images: int):
    from locktune.eval.suites import SUITES

    tasks = SUITES.get(grid.suite)
    if max_images:
        tasks = [dataclasses.replace(t, max_images=min(t.max_images or max_images, max_images)) for t in tasks]
    return tasks


def find_identical_run(root: Path, config: RunConfig, suite: str, eval_max_images: int,
                       processes: int = 1) -> Path | None:
    """A finished run anywhere under `root` (another grid's arm) with this exact config (but its folder),
    process count and evaluation: training it again would only repeat it.  Records that were themselves
    reused are skipped, so every reused record points at a run that really trained; so are records scored on
    other clean drop lists (a record without `clean_lists` was scored on version 1)."""
    from locktune.eval.benchmarks.clean import LISTS_VERSION

    wanted = _comparable(config.to_dict())
    for path in sorted(Path(root).glob(f"*/*/{RECORD}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if ("reused_from" not in record and record.get("suite") == suite
                and record.get("processes", 1) == processes
                and record.get("eval_max_images", 0) == eval_max_images
                and record.get("clean_lists", {}).get("version", 1) == LISTS_VERSION
                and _comparable(record.get("config", {})) == wanted):
            return path
    return None


def scoring(model) -> dict:
    """What the trained model's similarities mean: its loss, final scale t (1 / temperature) and, for the
    sigmoid loss, bias b in sigmoid(t * cos + b): a record's losses are read against these."""
    bias = getattr(model, "logit_bias", None)
    scale = float(model.scale)
    return {"loss": model.loss, "scale": round(scale, 6), "temperature": round(1 / scale, 6),
            "bias": None if bias is None else round(float(bias), 6)}


def run_arm(grid: Grid, arm: Arm, seed: int, out_dir: Path, order: int, extra: list[str] = (),
            eval_max_images: int = 0, log=print, keep_checkpoints: bool = False,
            calibration: dict | None = None) -> dict:
    """Train, evaluate and record one arm.  Once its record is written the arm is never resumed, so its
    training checkpoints (model + optimizer state, ~3x the model) are deleted unless `keep_checkpoints`;
    the model (`model/`, a saved-model folder) stays."""
    from locktune.cache.embedding_cache import benchmarks_decoded_once
    from locktune.cache.image_side import reads_cache
    from locktune.eval.suites import run_tasks
    from locktune.eval.benchmarks.clean import clean_lists_record
    from locktune.eval.results import file_fingerprint
    from locktune.saved_model import RUN_MODEL_DIR, WEIGHTS, load_any

    run_dir = out_dir / arm.run_name(seed)
    config = grid.run_config(arm, seed, run_dir, list(extra))
    _check_same_config(run_dir, config)
    trained = _train_arm(config, run_dir, arm.processes)
    started = time.time()
    model = load_any(run_dir)
    # A trained image tower has no feature cache: it runs over every benchmark image.  Those images are
    # then decoded (SVGs rendered) once for all arms of the grid, not once per arm.
    decoding = nullcontext() if reads_cache(model) else benchmarks_decoded_once()
    with decoding:
        evaluations = run_tasks(model, _tasks(grid, eval_max_images), workers=config.data.image_workers,
                                train_sources=tuple(config.data.sources), log=lambda line: None, data=config.data)
    curve = _training_curve(run_dir)
    record = {
        "grid": grid.name, "arm": arm.name, "seed": seed, "order": order, "label": arm.label,
        "overrides": list(arm.overrides), "processes": arm.processes, "config": config.to_dict(),
        "train": {"seconds": trained["seconds"], "steps": config.train.steps,
                  "image_forward_passes": trained["image_forward_passes"], "skipped_images": trained["skipped_images"],
                  "first_loss": curve[0][1] if curve else None, "final_loss": curve[-1][1] if curve else None,
                  "curve": curve},
        "eval": {key: evaluation.recorded() for key, evaluation in evaluations.items()},
        "suite": grid.suite, "eval_max_images": eval_max_images,
        "eval_seconds": round(time.time() - started, 1),
        "model_fingerprint": file_fingerprint(run_dir / RUN_MODEL_DIR / WEIGHTS),
        "design": grid.design,
        "scoring": scoring(model),
        "clean_lists": clean_lists_record(t.benchmark for t in _tasks(grid, eval_max_images)),
    }
    if calibration is not None:
        record["calibration"] = calibration
    if (run_dir / "training.json").is_file():  # pairs trained on and held out, batch-norm recalibration
        record["train"]["run"] = json.loads((run_dir / "training.json").read_text())
    write_record(record, run_dir / RECORD)
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return record


def run_grid(grid: Grid, out_dir: str | Path, only_arms: list[str] | None = None, seeds: list[int] | None = None,
             extra: list[str] = (), smoke: bool = False, eval_max_images: int = 0, log=print,
             keep_checkpoints: bool = False) -> GridRun:
    """Every (arm, seed) in order; `only_arms`/`seeds` pick a part of the grid; `smoke` runs its first
    two arms, one seed each, on the tiny SMOKE settings (plus the grid's own `smoke` overrides)."""
    out_dir = Path(out_dir)
    arms = [grid.arm(name) for name in only_arms] if only_arms else list(grid.arms)
    if smoke:
        arms = arms[:2] if not only_arms else arms
        extra = [*SMOKE, *grid.smoke, *extra]
        eval_max_images = eval_max_images or SMOKE_EVAL_IMAGES
    runs = [(arm, seed) for arm in arms for seed in (seeds or (arm.seeds[:1] if smoke else arm.seeds))]
    if not runs:
        raise LocktuneError(f"grid '{grid.name}': nothing to run (no arm has the seeds {seeds})")
    records, trained, reused = [], [], []
    started, spent = time.time(), []
    shared_extra = list(extra)
    for index, (arm, seed) in enumerate(runs):
        extra = [*shared_extra, *arm.smoke] if smoke else shared_extra
        calibration = None
        if arm.budget_s and not smoke:  # a smoke run keeps its two steps
            calibration = calibrate(grid, arm, out_dir, list(extra), log)
            extra = [*extra, *budget_overrides(calibration["steps"])]
        order = grid.arms.index(arm) * 1000 + seed
        path = out_dir / arm.run_name(seed) / RECORD
        if path.is_file():
            record = json.loads(path.read_text())
            _check_same_config(path.parent, grid.run_config(arm, seed, path.parent, list(extra)))
            records.append(record)
            reused.append(arm.run_name(seed))
            log(f"[{index + 1}/{len(runs)}] {grid.name} {arm.run_name(seed)}: finished before, kept")
            continue
        config = grid.run_config(arm, seed, path.parent, list(extra))
        twin = find_identical_run(out_dir.parent, config, grid.suite, eval_max_images, arm.processes)
        if twin is not None:
            _check_same_config(path.parent, config)
            record = {**json.loads(twin.read_text()), "grid": grid.name, "arm": arm.name, "seed": seed,
                      "order": order, "label": arm.label, "overrides": list(arm.overrides),
                      "reused_from": str(twin.parent.relative_to(out_dir.parent))}
            write_record(record, path)
            records.append(record)
            reused.append(arm.run_name(seed))
            log(f"[{index + 1}/{len(runs)}] {grid.name} {arm.run_name(seed)}: same config and suite as "
                f"{record['reused_from']}, its record is reused")
            continue
        # runs still without a record (one reused from another grid is only found when reached)
        remaining = sum(not (out_dir / a.run_name(s) / RECORD).is_file() for a, s in runs[index:])
        eta = f", about {sum(spent) / len(spent) * remaining / 60:.0f} min left" if spent else ""
        log(f"[{index + 1}/{len(runs)}] {grid.name} {arm.run_name(seed)}: {' '.join(arm.overrides) or 'base'}"
            f" ({arm.processes} process{'es' if arm.processes > 1 else ''}){eta}")
        t0 = time.time()
        record = run_arm(grid, arm, seed, out_dir, order, extra, eval_max_images, log, keep_checkpoints,
                         calibration)
        spent.append(time.time() - t0)
        records.append(record)
        trained.append(arm.run_name(seed))
        log(f"    trained {record['train']['seconds']:.0f}s, evaluated {record['eval_seconds']:.0f}s; "
            f"loss {record['train']['first_loss']} -> {record['train']['final_loss']}")
    log(f"grid {grid.name}: {len(trained)} runs trained, {len(reused)} kept, {time.time() - started:.0f}s")
    return GridRun(grid, out_dir, records, trained, reused)
