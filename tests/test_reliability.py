"""Faults: a full disk, NaN losses, a damaged cache, kills at exact and random points, a rank that dies."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from locktune.config import RunConfig
from tiny_configs import tiny_run
from locktune.errors import LocktuneError


def tiny(run_dir, steps=6, **train) -> RunConfig:
    return tiny_run(run_dir, steps=steps, train=train)


def test_only_the_newest_checkpoints_are_kept(tmp_path, emoji_pairs):
    from locktune.train.checkpoint import list_checkpoints
    from locktune.train.trainer import train

    train(tiny(tmp_path, steps=6, checkpoint_every=1, keep_checkpoints=2), pairs=emoji_pairs)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005.safetensors", "step_00000006.safetensors"]


def test_full_disk_keeps_previous_checkpoint_and_stops_clearly(tmp_path, emoji_pairs, monkeypatch):
    from locktune.train import checkpoint as ckpt
    from locktune.train.trainer import train

    real_write, calls = ckpt._write, []

    def filling_disk(obj, f):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: half written, then the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(obj, f)

    monkeypatch.setattr(ckpt, "_write", filling_disk)
    with pytest.raises(LocktuneError, match="the disk is full. Nothing was overwritten"):
        train(tiny(tmp_path, steps=6, checkpoint_every=2), pairs=emoji_pairs)
    monkeypatch.setattr(ckpt, "_write", real_write)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["step_00000002.safetensors"], "no temporary file left behind"
    assert ckpt.load_checkpoint(tmp_path / "checkpoints" / files[0])["step"] == 2
    resumed = train(tiny(tmp_path, steps=6, checkpoint_every=2), pairs=emoji_pairs, resume=True)
    assert resumed.steps_done == 6


def poison_steps(monkeypatch, bad: set[int]):
    """Make the loss (and so every gradient) NaN at the given steps."""
    from locktune.train import trainer

    real, counter = trainer.whole_step, {"step": 0}

    def step(model, batch, autocast, loss_name="global", **seeding):
        loss = real(model, batch, autocast, loss_name, **seeding)
        current = counter["step"]
        counter["step"] += 1
        if current in bad:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
            return loss * float("nan")
        return loss

    monkeypatch.setattr(trainer, "whole_step", step)


def test_nan_steps_are_skipped_and_counted(tmp_path, emoji_pairs, monkeypatch):
    from locktune.train.trainer import train

    poison_steps(monkeypatch, {2, 3})
    result = train(tiny(tmp_path, steps=6), pairs=emoji_pairs)
    assert result.bad_steps == [2, 3] and result.steps_done == 6
    assert all(torch.isfinite(p).all() for p in result.model.parameters()), "no NaN reached the weights"


def test_too_many_nan_steps_in_a_row_stop_the_run(tmp_path, emoji_pairs, monkeypatch):
    from locktune.train.checkpoint import latest_checkpoint, load_checkpoint
    from locktune.train.trainer import train

    poison_steps(monkeypatch, {3, 4, 5, 6, 7})
    # Step 4 is checkpointed mid-streak: its weights are those of step 3 (updates were skipped), still good.
    with pytest.raises(LocktuneError, match=r"NaN/Inf for 3 steps in a row \(steps 3-5\).*step_00000004.safetensors"):
        train(tiny(tmp_path, steps=10, checkpoint_every=2, max_bad_steps=3), pairs=emoji_pairs)
    saved = load_checkpoint(latest_checkpoint(tmp_path))
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_damaged_cache_entry_is_an_error_or_recomputed(tmp_path):
    from locktune.cache.embedding_cache import cached_features
    from locktune.data.images import ArrayImages
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    images = ArrayImages(np.random.default_rng(3).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8), "damage-test")
    tower = build_image_tower("mobilenet_v2", pretrained=True)
    prep = preprocess_for(tower, 32)
    first = cached_features(tower, prep, images, workers=0)
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(LocktuneError, match=rf"'{first.path}' is damaged \(checksum mismatch"):
        cached_features(tower, prep, images, workers=0)
    first.path.write_bytes(data[:-4] + b"\x00\x00\x80\x7f")  # same size, one value changed
    with pytest.raises(LocktuneError, match="checksum mismatch"):
        cached_features(tower, prep, images, workers=0)
    again = cached_features(tower, prep, images, workers=0, recompute_corrupt=True)
    assert again.computed and torch.equal(again.features, first.features)


TRAIN_ARGS = ["data.sources=[emoji]", "data.max_pairs_per_source=64", "data.image_workers=0", "model.setting=Lu",
              "model.text_tower=clip", "model.image_tower=mobilenet_v2", "model.image_size=64", "model.text_width=32",
              "model.text_layers=1", "model.text_heads=2", "model.text_vocab_size=400", "train.steps=14",
              "train.batch_size=16", "train.warmup_steps=2", "train.checkpoint_every=1", "train.log_every=1"]


def cli(*args, cache, env=None):
    env = {**os.environ, "LOCKTUNE_QUIET": "1", "LOCKTUNE_CACHE": str(cache), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "locktune", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def paused(proc, marker, timeout=240) -> dict:
    """Wait until the process reports it is paused at its `LOCKTUNE_TEST_PAUSE_AT` point."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"exited ({proc.returncode}) before the pause point: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "never reached the pause point"
        time.sleep(0.05)
    return json.loads(marker.read_text())


@pytest.mark.slow
def test_training_killed_mid_checkpoint_write_and_mid_step_resumes_to_the_same_model(tmp_path):
    """SIGKILL at two exact points (`LOCKTUNE_TEST_PAUSE_AT`, runtime/pause_point.py): with the third
    checkpoint's temporary file written but not renamed, then mid-step after a resume.  The temporary file
    is there when killed and gone after the next start; the final weights equal an uninterrupted run's
    bit for bit (same seed, same thread count)."""
    cache, run = tmp_path / "cache", tmp_path / "killed"
    whole = cli("train", *TRAIN_ARGS, f"run_dir={tmp_path / 'whole'}", cache=cache)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    marker = tmp_path / "paused.json"
    pause = {"LOCKTUNE_TEST_PAUSE_FILE": str(marker), "LOCKTUNE_TEST_PAUSE_AT": "checkpoint-write:3"}
    proc = cli("train", *TRAIN_ARGS, f"run_dir={run}", cache=cache, env=pause)
    where = paused(proc, marker)
    temporary = Path(where["temporary"])
    assert where["point"] == "checkpoint-write" and temporary.name == f".step_00000003.safetensors.tmp{proc.pid}"
    assert temporary.stat().st_size > 100_000, "the whole checkpoint is in the temporary file"
    assert not (run / "checkpoints" / "step_00000003.safetensors").exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert temporary.exists(), "a kill leaves the temporary file"

    marker.unlink()
    proc = cli("train", *TRAIN_ARGS, f"run_dir={run}", "--resume", cache=cache,
               env={**pause, "LOCKTUNE_TEST_PAUSE_AT": "train-step:2"})
    assert paused(proc, marker)["point"] == "train-step"
    assert not temporary.exists(), "the stale temporary file was removed at start"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    proc = cli("train", *TRAIN_ARGS, f"run_dir={run}", "--resume", cache=cache)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    b = load_file(str(run / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps[-1] == 14
    assert not [p.name for p in (run / "checkpoints").iterdir() if ".tmp" in p.name]


def test_stale_checkpoint_temporaries_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    from locktune.train.checkpoint import remove_stale_temporaries

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    names = {f".step_00000003.safetensors.tmp{gone.pid}": "removed",
             f".step_00000001.pt.tmp{gone.pid}": "removed (an older version's)",
             f".step_00000004.safetensors.tmp{os.getpid()}": "ours, writing",
             f".step_00000004.safetensors.tmp{os.getppid()}": "a live writer",
             "step_00000002.safetensors": "a checkpoint",
             f".model.safetensors.tmp{gone.pid}": "not a checkpoint's",
             f".step_3.safetensors.tmp{gone.pid}": "not our pattern", "notes.txt": "someone else's"}
    for name in names:
        (folder / name).write_bytes(b"x" * 10)
    (folder / f".step_00000009.safetensors.tmp{gone.pid}").mkdir()  # a folder is never ours
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [f".step_00000001.pt.tmp{gone.pid}",
                                         f".step_00000003.safetensors.tmp{gone.pid}"]
    kept = {p.name for p in folder.iterdir()}
    assert kept == ({n for n, why in names.items() if not why.startswith("removed")}
                    | {f".step_00000009.safetensors.tmp{gone.pid}"})
    assert remove_stale_temporaries(tmp_path / "no-such-run") == []


@pytest.mark.slow
def test_precompute_killed_midway_gives_the_same_cache(tmp_path):
    """SIGKILL `locktune embed` twice at random moments, then let it finish: the same bytes as a run
    that was never interrupted."""
    args = ["embed", "--no-benchmarks", "data.sources=[emoji]", "data.max_pairs_per_source=400",
            "data.image_workers=0", "model.image_tower=mobilenet_v2", "model.image_size=64"]
    whole = cli(*args, cache=tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    rng = random.Random(11)
    for _ in range(2):
        proc = cli(*args, cache=tmp_path / "killed")
        time.sleep(rng.uniform(2.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    again = cli(*args, cache=tmp_path / "killed")
    assert again.wait(timeout=300) == 0, again.stderr.read()
    (a,) = (tmp_path / "whole" / "embeddings").glob("*.npy")
    (b,) = (tmp_path / "killed" / "embeddings").glob("*.npy")
    assert a.name == b.name and a.read_bytes() == b.read_bytes()


def _rank_that_dies(rank, port, run_dir, result_file):
    import torch.distributed as dist

    from locktune.train import trainer
    from locktune.runtime.distributed import distributed_session

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCKTUNE_QUIET="1", LOCKTUNE_DIST_TIMEOUT_S="20")
    torch.set_num_threads(1)
    real = trainer.whole_step
    calls = []

    def step(*args, **kwargs):
        calls.append(1)
        if rank == 1 and len(calls) == 3:
            os._exit(17)  # killed without a word
        return real(*args, **kwargs)

    trainer.whole_step = step
    from locktune.data.pairs import load_pairs

    started = time.time()
    try:
        with distributed_session():
            trainer.train(tiny(run_dir, steps=20), pairs=load_pairs(["emoji"], 48))
        outcome = "finished"
    except Exception as error:  # noqa: BLE001 - any error is the point: not a hang
        outcome = f"error: {type(error).__name__}"
    with open(result_file, "w") as f:
        json.dump({"outcome": outcome, "seconds": time.time() - started}, f)
    os._exit(3 if outcome != "finished" else 0)


@pytest.mark.slow
def test_a_dead_rank_makes_the_others_exit_with_an_error(tmp_path):
    """Rank 1 vanishes mid-training; rank 0 must raise (not hang) well within the collective timeout."""
    import multiprocessing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_rank_that_dies, args=(r, port, str(tmp_path / "run"), str(tmp_path / f"r{r}.json")))
             for r in range(2)]
    for p in procs:
        p.start()
    procs[0].join(timeout=180)
    alive = procs[0].is_alive()
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, "rank 0 hung after rank 1 died"
    assert procs[1].exitcode == 17
    assert procs[0].exitcode == 3
    outcome = json.loads((tmp_path / "r0.json").read_text())
    assert outcome["outcome"].startswith("error") and outcome["seconds"] < 120


def test_unreadable_image_while_training_the_image_tower_is_skipped_and_counted(tmp_path):
    """A trained image tower decodes every batch: a broken file replaces its pair with the next readable
    one (the same every run), is counted, and the run finishes."""
    from locktune.data.images import FileImages
    from locktune.data.pairs import PairSet
    from locktune.train.trainer import train
    from PIL import Image

    paths = []
    for i in range(16):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 40), (16 * i, 255 - 16 * i, 90)).save(path)
        paths.append(path)
    paths[5].write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    pairs = PairSet("tiny", FileImages(paths), [[f"colour number {i}"] for i in range(16)])
    config = tiny_run(tmp_path / "run", steps=3, train={"batch_size": 16})
    config.model.setting = "Uu"
    first = train(config, pairs=pairs)
    assert list(first.skipped_images) == [str(paths[5])] and first.steps_done == 3
    assert first.image_forward_passes == 3 * 16
    config.run_dir = str(tmp_path / "again")
    assert train(config, pairs=pairs).losses == first.losses  # the replacement is deterministic
