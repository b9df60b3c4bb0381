"""Checkpoints: written to a temporary file, fsynced and renamed, so a kill never leaves a broken one.

A training checkpoint (`checkpoints/step_00000100.safetensors`) holds the model, optimizer, schedule, step
(which is the data position, see `batches.py`), loss history, every process's RNG states (CPU, device, numpy,
Python) and the config, which `--resume` compares; the newest N are kept.  Tensors are stored on the CPU.
The file is safetensors plus JSON (`checkpoint_format.py`): reading one never runs code from it, so a run
folder others can write to cannot take over `--resume`.  Checkpoints of older versions (`step_*.pt`,
pickled) are refused, never unpickled.
The trained model itself is a saved-model folder (`run_dir/model/`, `locktune.saved_model`): checkpoints are
only for `--resume` of one's own run.  A write that fails (a full disk) removes its temporary file
and stops the run with a clear error; the previous checkpoint is untouched.  A write cut by a kill leaves
its temporary file, which the next `train` of that run folder removes (`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import torch

from locktune.errors import LocktuneError
from locktune.runtime import distributed, placement
from locktune.runtime.pause_point import pause_point
from locktune.train import checkpoint_format

SUFFIX = ".safetensors"
LEGACY_SUFFIX = ".pt"  # pickled checkpoints of locktune before the safetensors format: refused, never read
# `atomic_save`'s temporary name for checkpoints/step_00000100.safetensors: .step_00000100.safetensors.tmp<pid>
# (and the old .step_00000100.pt.tmp<pid>, which an older version's killed write may have left)
_TEMP = re.compile(r"^\.step_\d{8}\.(?:safetensors|pt)\.tmp(\d+)$")


def _write(tree: Any, f) -> None:
    """The checkpoint's bytes into an open file (a seam for the full-disk test)."""
    f.write(checkpoint_format.to_bytes(tree))


def atomic_save(obj: Any, path: Path) -> None:
    """Write `obj` (`checkpoint_format`) to `.NAME.tmp<pid>` beside `path`, fsync, rename over `path`, fsync the
    folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _write(obj, f)
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


def rng_states(device: torch.device) -> list[dict[str, Any]]:
    """Every process's random streams (CPU, device, numpy, Python: `placement.rng_state`), in rank order; a
    collective under torchrun.  Each rank's own: dropout on rank 1 draws from rank 1's device generator."""
    mine = placement.rng_state(device)
    if not distributed.is_distributed():
        return [mine]
    import torch.distributed as dist

    states: list = [None] * distributed.world_size()
    dist.all_gather_object(states, mine)
    return states


def restore_rng(states: list[dict[str, Any]] | dict[str, Any], device: torch.device) -> None:
    """This process's streams from a checkpoint: its own rank's (a checkpoint from before per-rank states holds
    one dict, rank 0's).  Resumed with more processes than wrote it, the extra ranks take rank 0's, and that
    is said: their dropout does not repeat an earlier run's anyway, having had no earlier run."""
    states = states if isinstance(states, list) else [states]
    rank = distributed.rank()
    if rank >= len(states) and distributed.is_main():
        import sys

        print(f"locktune: the checkpoint holds random streams for {len(states)} process(es); ranks from "
              f"{len(states)} on start from rank 0's", file=sys.stderr)
    placement.restore_rng(states[rank] if rank < len(states) else states[0], device)


# Keys a resumed run may change: where and how it runs (device, sharding, compilation, recomputed activations) and
# how often and where it reports, evaluates or keeps checkpoints, none of which changes the arithmetic beyond
# float rounding (evaluation during training leaves training as it was: `train/periodic_eval.py`; a
# checkpoint written by N processes, sharded or not, resumes in M).  Any other difference (model, data, loss,
# schedule, steps, seed, batch, chunks, precision...) is refused.
RESUMABLE_CHANGES = {"run_dir", "train.device", "train.parallel", "train.compile", "train.grad_checkpointing",
                     "train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "train.max_bad_steps",
                     "data.image_workers", "data.recompute_corrupt_cache", "train.report_to", "train.eval_every",
                     "train.eval_suite", "train.keep_best"}


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(saved: dict, now: dict) -> list[str]:
    """The keys whose values differ between two configs (`RunConfig.to_dict()`), less `RESUMABLE_CHANGES` and
    the eval section (evaluation never changes training).  A key the saved config lacks (added to locktune after
    the checkpoint was written) counts at its default, which is what that run used: new keys do not lock old
    checkpoints out of --resume."""
    from locktune.config import RunConfig

    a, b = _flat(saved), _flat(now)
    defaults = _flat(RunConfig().to_dict())
    a.update({k: defaults[k] for k in set(b) - set(a) if k in defaults})
    return sorted(k for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES and not k.startswith("eval."))


def check_resumable(saved: dict | None, now: dict, path: Path) -> None:
    """Refuse to resume a checkpoint written with a config that trains differently (one line naming the keys)."""
    if saved is None:
        return
    changed = changed_keys(saved, now)
    if changed:
        shown = ", ".join(f"{k} ({_flat(saved).get(k)!r} -> {_flat(now).get(k)!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise LocktuneError(f"--resume: checkpoint '{path}' was written with another config: {shown}{more}. Resume "
                            "with the run's own config, or start a new run (--overwrite or another run_dir)")


def run_artifacts(run_dir: Path) -> list[Path]:
    """What a run leaves in its folder that another run must not mix with: checkpoints and the step and
    evaluation logs."""
    run_dir = Path(run_dir)
    found = list_checkpoints(run_dir) + legacy_checkpoints(run_dir)
    return found + [log for log in (run_dir / "train_log.jsonl", run_dir / "eval_log.jsonl") if log.is_file()]


def remove_run(run_dir: Path) -> None:
    """Remove an earlier run's checkpoints, logs, TensorBoard events, best model and summary (`--overwrite`); its
    saved model is replaced when this run finishes.  A wandb folder stays (its offline runs may not be synced
    yet); only its run id goes, so the new run is a new wandb run."""
    import shutil

    from locktune.report_to.tensorboard_events import TENSORBOARD_DIR
    from locktune.report_to.wandb_run import WANDB_RUN_ID
    from locktune.train.best_model import BEST_DIR

    for path in run_artifacts(run_dir) + [Path(run_dir) / "training.json", Path(run_dir) / WANDB_RUN_ID]:
        path.unlink(missing_ok=True)
    for folder in (TENSORBOARD_DIR, BEST_DIR):
        shutil.rmtree(Path(run_dir) / folder, ignore_errors=True)


def to_cpu(tree: Any) -> Any:
    """A checkpoint's tensors on the CPU: it then loads on any machine, whatever device trained it."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}{SUFFIX}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary files of an interrupted write are not listed)."""
    return sorted((Path(run_dir) / "checkpoints").glob(f"step_*{SUFFIX}"))


def legacy_checkpoints(run_dir: Path) -> list[Path]:
    """Pickled checkpoints an older locktune wrote (`step_*.pt`): listed so they are refused and removed with
    the run, never loaded."""
    return sorted((Path(run_dir) / "checkpoints").glob(f"step_*{LEGACY_SUFFIX}"))


REQUIRED = ("model", "optimizer", "scheduler", "step", "losses", "rng", "config")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`, tensors on the CPU; a damaged file, another format or an old
    pickled `.pt` is one line (nothing in the file is run)."""
    path = Path(path)
    if path.suffix == LEGACY_SUFFIX:
        raise LocktuneError(f"--resume: '{path}' is a checkpoint of an older locktune (pickled .pt), which this "
                            "version does not read (unpickling runs code from the file). Resume with the version "
                            "that wrote it, or start a new run (--overwrite or another run_dir)")
    try:
        checkpoint = checkpoint_format.read(path)
    except checkpoint_format.FormatError as error:
        raise LocktuneError(f"--resume: checkpoint '{path}' cannot be read: {error}. Remove it to resume from the "
                            "one before, or start a new run (--overwrite or another run_dir)") from None
    missing = [key for key in REQUIRED if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise LocktuneError(f"--resume: checkpoint '{path}' lacks {', '.join(missing)}. Remove it to resume from "
                            "the one before, or start a new run (--overwrite or another run_dir)")
    return checkpoint


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resume_point(run_dir: Path) -> Path | None:
    """The newest checkpoint by step, old pickled ones included (so that `load_checkpoint` refuses a run whose
    newest checkpoint an older version wrote, instead of quietly resuming an earlier step)."""
    found = sorted(list_checkpoints(run_dir) + legacy_checkpoints(run_dir), key=lambda p: (p.stem, p.suffix))
    return found[-1] if found else None


def save_checkpoint(state: dict, run_dir: Path, step: int, keep: int) -> Path:
    """Write step's checkpoint, then drop all but the newest `keep`."""
    path = checkpoint_path(run_dir, step)
    atomic_save(to_cpu(state), path)
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
