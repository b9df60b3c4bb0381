"""Checkpoints: written to a temporary file, fsynced and renamed, so a kill never leaves a broken one.

A training checkpoint (`checkpoints/step_00000100.pt`) holds the model, optimizer, schedule, step (which
is the data position, see `batches.py`), loss history and every RNG state; the newest N are kept.
The trained model itself is a saved-model folder (`run_dir/model/`, `locktune.saved_model`): checkpoints are
only for `--resume` of one's own run.  A write that fails (a full disk) removes its temporary file
and stops the run with a clear error; the previous checkpoint is untouched.  A write cut by a kill leaves
its temporary file, which the next `train` of that run folder removes (`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from locktune.errors import LocktuneError
from locktune.runtime.pause_point import pause_point

# `atomic_save`'s temporary name for checkpoints/step_00000100.pt: .step_00000100.pt.tmp<pid>
_TEMP = re.compile(r"^\.step_\d{8}\.pt\.tmp(\d+)$")


def atomic_save(obj: Any, path: Path) -> None:
    """Write `obj` to `.NAME.tmp<pid>` beside `path`, fsync, rename over `path`, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        pause_point("checkpoint-write", temporary=str(tmp))  # tests kill here: written, not yet renamed
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete checkpoint temporary files a killed write left in `run_dir/checkpoints` (each as large as a
    checkpoint).  Only names `atomic_save` makes for checkpoints, and only those whose writer process is
    gone (this process's own, or a live process's, are kept); returns what was removed."""
    removed = []
    folder = Path(run_dir) / "checkpoints"
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _TEMP.match(entry.name)
        if match and entry.is_file() and not entry.is_symlink():
            pid = int(match.group(1))
            if pid != os.getpid() and not _alive(pid):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed
