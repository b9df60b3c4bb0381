"""Checkpoints: written to a temporary file, fsynced and renamed, so a kill never leaves a broken one.

A training checkpoint (`checkpoints/step_00000100.pt`) holds the model, optimizer, schedule, step (which
is the data position, see `batches.py`), loss history and every RNG state; the newest N are kept.
`model.pt` holds what evaluation needs.  A write that fails (a full disk) removes its temporary file
and stops the run with a clear error; the previous checkpoint is untouched.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from locktune.config import config_from_dict
from locktune.errors import LocktuneError

MODEL_FORMAT = 1


def atomic_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        directory = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        why = "the disk is full" if error.errno == errno.ENOSPC else str(error)
        raise LocktuneError(f"could not write '{path}': {why}. Nothing was overwritten; free space and "
                            "rerun with --resume to continue from the last checkpoint") from error


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary files of an interrupted write are not listed)."""
    return sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict, run_dir: Path, step: int, keep: int) -> Path:
    """Write step's checkpoint, then drop all but the newest `keep`."""
    path = checkpoint_path(run_dir, step)
    atomic_save(state, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def save_model(model, path: Path, state: dict | None = None) -> None:
    """The trained model with what a fresh process needs to rebuild it (no training config).
    `state`: the whole state dict when the model is sharded; only the first process writes."""
    from locktune.towers.setting import unwrap
    from locktune.train.distributed import is_main

    if is_main():
        atomic_save({"format": MODEL_FORMAT, "config": {"model": vars(model.config).copy()},
                     "tokenizer_json": unwrap(model.text_tower).tokenizer_json(),
                     "state_dict": state if state is not None else model.state_dict()}, Path(path))


def load_model(path: str | Path):
    """Rebuild a model saved by `save_model` (or take the model out of a training checkpoint)."""
    from locktune.model import build_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise LocktuneError(f"no model at '{path}'; give a run folder holding model.pt, or the .pt file")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("format") != MODEL_FORMAT:
        raise LocktuneError(f"'{path}' has model format {saved.get('format')!r}; this locktune reads {MODEL_FORMAT}")
    config = config_from_dict({"model": saved["config"]["model"]})
    model = build_model(config.model, tokenizer_json=saved.get("tokenizer_json"))
    # Models saved before MiniLM's unused pooler was dropped carry its (never trained) weights.
    state = {k: v for k, v in saved["state_dict"].items() if ".encoder.pooler." not in k}
    model.load_state_dict(state)
    model.eval()
    return model
