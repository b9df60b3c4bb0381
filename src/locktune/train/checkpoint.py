"""Checkpoints: written to a temporary file, fsynced and renamed, so a kill never leaves a broken one.

A training checkpoint holds the model, optimizer, schedule, step (which is the data position, see
`batches.py`), loss history and every RNG state; `model.pt` holds what evaluation needs.
"""

from __future__ import annotations

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    path = Path(run_dir) / "checkpoints" / "latest.pt"
    return path if path.is_file() else None


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
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model
