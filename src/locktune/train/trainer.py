"""The training loop: AdamW, warm-up + cosine, gradient clipping, optional bf16 autocast, checkpoints.

With a locked image tower the images are never decoded during training: the batch's image side is a
row of the embedding cache.  Otherwise the batch's images are decoded and run through the tower.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from locktune.cache.embedding_cache import cached_features
from locktune.cache.sharded import ShardedCache
from locktune.config import RunConfig
from locktune.errors import LocktuneError
from locktune.data.pairs import PairSet, load_pairs
from locktune.model import TwoTower, build_model
from locktune.progress import progress
from locktune.towers.setting import unwrap
from locktune.train.batches import BatchPlan
from locktune.train.checkpoint import latest_checkpoint, remove_stale_temporaries, restore_rng, rng_state
from locktune.train.checkpoint import save_checkpoint as save_checkpoint_file
from locktune.runtime import distributed
from locktune.runtime.pause_point import pause_point
from locktune.train.schedule import build_scheduler
from locktune.train.step import Batch, gradient_cached_step, mix_seed, whole_step
from locktune.train.unlock import image_unlock_schedule


@dataclass
class TrainResult:
    model: TwoTower
    losses: list[float]
    run_dir: Path
    steps_done: int
    image_forward_passes: int = 0  # images run through the image tower during this call
    skipped_images: dict[str, str] = field(default_factory=dict)
    bad_steps: list[int] = field(default_factory=list)  # steps whose update was skipped (NaN/Inf)
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise LocktuneError("train.device is 'cuda' but no CUDA device is visible; use train.device=cpu")
    if name == "cuda" and distributed.is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def check_matches(sharded: ShardedCache, model: TwoTower, where: str) -> None:
    """A sharded cache is only used for the tower, weights and preprocessing it was computed with."""
    tower = unwrap(model.image_tower)
    if not model.setting.image_locked:
        raise LocktuneError(f"data.embedding_cache '{where}' holds a locked image tower's embeddings, but setting "
                            f"'{model.setting}' trains the image tower; use an 'L?' setting or drop the cache")
    expected = {**tower.cache_identity(), "preprocess": model.preprocess.describe()}
    for key, value in expected.items():
        if sharded.manifest.get(key) != json.loads(json.dumps(value)):  # as the manifest stores it
            raise LocktuneError(f"data.embedding_cache '{where}' was computed with another {key} "
                                f"({sharded.manifest.get(key)!r}, this model: {value!r}); rebuild it with "
                                "`locktune embed --sharded` and this model's config")


class BatchDecoder:
    """Decodes a batch's images for a trained image tower.  An image that cannot be read is counted in
    `skipped` and its pair replaced by the next readable one in the plan's order (the same one every time,
    so runs stay deterministic and `--resume` exact) instead of stopping the run."""

    def __init__(self, images, usable: np.ndarray, preprocess, skipped: dict[str, str]):
        self.images, self.usable, self.preprocess, self.skipped = images, usable, preprocess, skipped
        self.unreadable: set[int] = set()

    def _load(self, row: int) -> torch.Tensor | None:
        if row in self.unreadable:
            return None
        index = int(self.usable[row])
        try:
            return self.preprocess(self.images.load(index))
        except Exception as error:  # any decoder failure: skip and count, never end the run
            self.unreadable.add(row)
            self.skipped[self.images.keys[index]] = f"{type(error).__name__}: {error}"[:200]
            if len(self.unreadable) > len(self.usable) // 2:
                raise LocktuneError(f"more than half of the {len(self.usable)} training images cannot be read "
                                    f"(e.g. {self.images.keys[index]}: {error}); check the data source") from error
            return None

    def pixels(self, rows: list[int]) -> tuple[torch.Tensor, list[int]]:
        out, used = [], []
        for row in rows:
            candidate = row
            while (tensor := self._load(candidate)) is None:
                candidate = (candidate + 1) % len(self.usable)
            out.append(tensor)
            used.append(candidate)
        return torch.stack(out), used


def _optimizer(model: TwoTower, config: RunConfig) -> torch.optim.Optimizer:
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_head = name.startswith(("image_projection", "text_projection", "log_logit_scale", "logit_bias"))
            # Biases, norms and the temperature (and the sigmoid loss's bias) are not decayed (as in CLIP/LiT trainers).
            decays = p.ndim >= 2 and "log_logit_scale" not in name
            groups.setdefault((is_head, decays), []).append(p)
    lr, mult, wd = config.train.lr, config.train.head_lr_multiplier, config.train.weight_decay
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    return torch.optim.AdamW([{"params": params, "lr": lr * (mult if head else 1.0), "weight_decay": wd if decays else 0.0}
                              for (head, decays), params in sorted(groups.items())], lr=lr, **fused)


def save_trained_model(model: TwoTower, run_dir: Path, state: dict) -> None:
    """The finished run's model as a saved-model folder (`run_dir/model/`): what eval, the API, index, serve,
    ablate and export load.  Only the first process writes."""
    from locktune.saved_model import RUN_MODEL_DIR, save_pretrained

    if distributed.is_main():
        save_pretrained(model, run_dir / RUN_MODEL_DIR, state=state)


def train(config: RunConfig, pairs: PairSet | None = None, resume: bool = False,
          stop_after: int | None = None) -> TrainResult:
    """Train per `config`; with `resume`, continue from the run folder's latest checkpoint exactly.
    `stop_after` ends this call after that many steps in total (to test and to split long runs)."""
    started = time.time()
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():  # a checkpoint write killed earlier left its temporary file (checkpoint-sized)
        remove_stale_temporaries(run_dir)
    torch.manual_seed(config.train.seed)
    sharded = ShardedCache.open(config.data.embedding_cache) if config.data.embedding_cache else None
    if sharded is None and pairs is None:
        pairs = load_pairs(config.data.sources, config.data.max_pairs_per_source)
    # Captions are read per batch, from the pairs or from the sharded cache (which holds them beside the
    # vectors, so training from it decodes no image and loads no source).
    captions = sharded.captions if sharded is not None else pairs.captions
    count = len(captions)

    def corpus():  # for a from-scratch tokenizer
        return (caption for i in range(count) for caption in captions[i])

    checkpoint = None
    if resume and (path := latest_checkpoint(run_dir)) is not None:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(config.model, corpus=corpus,
                        tokenizer_json=checkpoint["tokenizer_json"] if checkpoint else None, loss=config.train.loss)

    # Image side: cached features for a locked tower, else decode per batch.
    image_tower = unwrap(model.image_tower)
    skipped: dict[str, str] = {}
    forward_passes = 0
    feature_rows = None
    # Pair bookkeeping is numpy (row, caption count, then the epoch permutation: ~20 bytes per usable pair),
    # not Python lists, so a billion-pair cache needs no ~100 GB of index objects.
    usable = np.arange(count)
    if sharded is not None:
        check_matches(sharded, model, config.data.embedding_cache)
        usable = np.flatnonzero(sharded.valid.numpy())
        caption_counts = sharded.caption_counts()[usable]
        feature_rows = sharded.rows
    else:
        if model.setting.image_locked:
            cache = cached_features(image_tower, model.preprocess, pairs.images, workers=config.data.image_workers,
                                    desc=f"embedding {pairs.name}",
                                    recompute_corrupt=config.data.recompute_corrupt_cache)
            forward_passes += len(pairs) if cache.computed else 0
            skipped.update(cache.failed)
            usable = np.flatnonzero(cache.valid.numpy())
            feature_rows = cache.features.__getitem__
        caption_counts = np.fromiter((len(captions[i]) for i in usable), np.int32, len(usable))
    plan = BatchPlan(caption_counts, config.train.batch_size, config.train.seed)
    decoder = None if feature_rows is not None else BatchDecoder(pairs.images, usable, model.preprocess, skipped)

    device = resolve_device(config.train.device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    model.to(device)
    if config.train.parallel == "fsdp" and distributed.is_distributed():
        if model.setting.text_locked:
            raise LocktuneError("train.parallel=fsdp shards a trained text tower; this setting locks it")
        distributed.shard_text_tower(unwrap(model.text_tower))
    if config.train.compile:
        unwrap(model.text_tower).compile()  # in place: parameter names (and checkpoints) unchanged
    optimizer = _optimizer(model, config)
    # After the optimizer, which must hold the whole image tower before the schedule first freezes it.
    unlock = image_unlock_schedule(model, config.train.image_unlock_start, config.train.image_unlock_end)
    scheduler = build_scheduler(optimizer, config.train.warmup_steps, config.train.steps)
    step, losses, bad_steps = 0, [], []
    if checkpoint is not None:
        if unlock is not None:
            unlock.freeze_stateless(checkpoint["optimizer"])
        distributed.load_optimizer_state(model, optimizer, checkpoint["optimizer"])
        if unlock is not None:
            unlock.release()  # every flag as built: `trainable` below must hold the whole tower
        scheduler.load_state_dict(checkpoint["scheduler"])
        step, losses = checkpoint["step"], list(checkpoint["losses"])
        bad_steps = list(checkpoint.get("bad_steps", []))
        restore_rng(checkpoint["rng"])

    def save_checkpoint() -> None:
        model_state, optimizer_state = distributed.full_state(model, optimizer)  # collective under FSDP
        if not distributed.is_main():
            return
        save_checkpoint_file({"model": model_state, "optimizer": optimizer_state,
                              "scheduler": scheduler.state_dict(), "step": step, "losses": losses,
                              "rng": rng_state(), "bad_steps": bad_steps, "config": config.to_dict(),
                              "tokenizer_json": unwrap(model.text_tower).tokenizer_json()},
                             run_dir, step, config.train.keep_checkpoints)

    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if config.train.precision == "bf16"
                else nullcontext())
    world, rank = distributed.world_size(), distributed.rank()
    if config.train.batch_size % world:
        raise LocktuneError(f"train.batch_size ({config.train.batch_size}) must divide evenly over {world} processes")
    local = config.train.batch_size // world
    trainable = [p for p in model.parameters() if p.requires_grad]
    end = min(config.train.steps, stop_after) if stop_after is not None else config.train.steps
    model.train()
    main = distributed.is_main()
    log = open(run_dir / "train_log.jsonl", "a" if checkpoint is not None else "w") if main else None
    bar = progress(total=end - step, desc=f"training {config.model.setting}", unit="step", enabled=main)
    pairs_seen, tick, bad_in_a_row = 0, time.time(), 0
    while step < end:
        pair_rows, caption_choice = plan.batch(step)
        # Every process draws the same global batch and takes its own slice of it.
        mine = slice(rank * local, (rank + 1) * local)
        rows = [int(r) for r in pair_rows[mine]]
        pixels = None
        if feature_rows is None:  # decode now: an unreadable image's pair is replaced before tokenizing
            pixels, rows = decoder.pixels(rows)
            forward_passes += len(rows)
        pair_ids = usable[rows].tolist()
        tokens = model.tokenize([captions[p][int(c) % len(captions[p])] for p, c in zip(pair_ids, caption_choice[mine])])
        batch = Batch(tokens["ids"].to(device), tokens["mask"].to(device))
        if feature_rows is not None:
            batch.features = feature_rows(pair_ids).to(device)
        else:
            batch.pixels = pixels.to(device).contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)  # a frozen parameter's grad stays None: AdamW skips it
        unlocked = unlock.apply(step) if unlock is not None else None  # after model.train(): sets BN modes
        if config.train.chunk_size and config.train.chunk_size < local:
            # Dropout seeded per (run seed, step, global row of the chunk): a pure function of the step, so
            # resume stays exact and the replay draws the no-graph pass's masks on every device.
            loss = gradient_cached_step(model, batch, autocast, config.train.chunk_size, config.train.loss,
                                        seed=mix_seed(config.train.seed, step), first_row=rank * local)
        else:
            loss = whole_step(model, batch, autocast, config.train.loss)
        pause_point("train-step")  # tests kill here: gradients computed, weights not yet updated
        loss_value = distributed.mean_over_ranks(loss)  # identical on every rank, so all skip together
        distributed.average_gradients(distributed.replicated(trainable))
        grad_norm = distributed.clip_gradients(trainable, config.train.grad_clip)
        if math.isfinite(loss_value) and math.isfinite(float(grad_norm)):
            optimizer.step()
            model.clamp_logit_scale()
            bad_in_a_row = 0
        else:
            # Skip the update, keep the data position and the schedule moving, count it.
            bad_steps.append(step)
            bad_in_a_row += 1
            if main:
                print(f"locktune: step {step}: loss {loss_value} / gradient norm {float(grad_norm)} is not finite; "
                      f"update skipped ({bad_in_a_row} in a row, {len(bad_steps)} in all)", file=sys.stderr)
            if bad_in_a_row >= config.train.max_bad_steps:
                last = latest_checkpoint(run_dir)
                raise LocktuneError(
                    f"the loss or gradient was NaN/Inf for {bad_in_a_row} steps in a row (steps "
                    f"{bad_steps[-bad_in_a_row]}-{step}); stopped. Last good checkpoint: {last or 'none yet'}. "
                    "Lower train.lr, try train.precision=fp32, or check the data, then --resume")
        scheduler.step()
        step += 1
        losses.append(loss_value)
        pairs_seen += config.train.batch_size
        rate = pairs_seen / max(1e-9, time.time() - tick)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", pairs_s=f"{rate:.0f}", T=f"{1 / model.logit_scale.item():.3f}",
                        refresh=False)  # update() below draws it: one write per step
        bar.update(1)
        if main and (step % config.train.log_every == 0 or step == end):
            entry = {"step": step, "loss": losses[-1], "lr": scheduler.get_last_lr()[0],
                     "grad_norm": float(grad_norm), "logit_scale": model.logit_scale.item(),
                     "pairs_per_s": round(rate, 1)}
            if model.logit_bias is not None:
                entry["logit_bias"] = model.logit_bias.item()
            if unlocked is not None:
                entry["image_unlocked"] = round(unlocked, 4)  # share of image-tower layer groups trained
            log.write(json.dumps(entry) + "\n")
            log.flush()
        if step % config.train.checkpoint_every == 0 or step == end:
            save_checkpoint()
            distributed.barrier()
    bar.close()
    if unlock is not None:
        unlock.release()  # the returned model's parameters all trainable again, as without a schedule
    if log is not None:
        log.close()
    if step == config.train.steps:
        save_trained_model(model, run_dir, distributed.full_state(model, optimizer)[0])
    distributed.barrier()
    model.eval()
    return TrainResult(model, losses, run_dir, step, forward_passes, skipped, bad_steps, time.time() - started)
