"""The training loop: AdamW, warm-up + cosine, gradient clipping, optional bf16 autocast, checkpoints.

`train()` reads top to bottom as its named steps: prepare the run folder, load the data, restore a
checkpoint, build the model, open the image side (`train/images.py`: cached features for a locked image
tower, never decoding an image; decoded images otherwise), place the model, build the optimization; then
per step: the batch, forward and backward (`train/step.py`), the update, the log (to every sink of
train.report_to: `report_to/`), the evaluation every train.eval_every steps (`train/periodic_eval.py`,
which leaves training as it was), the checkpoint; at the end, a trained image tower's batch-norm statistics
recalibrated (`train/batchnorm.py`) and the model saved.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from locktune.cache.sharded import ShardedCache
from locktune.config import RunConfig, image_size_line, upgrade_config_dict
from locktune.errors import LocktuneError
from locktune.data.pairs import PairSet, load_pairs
from locktune.data.validation_split import split_pairs
from locktune.model import TwoTower, build_model
from locktune.progress import progress
from locktune.towers.setting import unwrap
from locktune.train.batches import BatchPlan
from locktune.train.data_order import data_order
from locktune.train.images import TrainingImages
from locktune.train.mixup import mix_batch
from locktune.train.texts import TrainingTexts
from locktune.train.periodic_eval import TrainingEvaluation, evaluation_tasks
from locktune.report_to import EVAL, Reporting, SinkContext, check_report_to
from locktune.train.checkpoint import (check_resumable, latest_checkpoint, load_checkpoint, remove_run,
                                       remove_stale_temporaries, restore_rng, resume_point, rng_states, run_artifacts)
from locktune.train.checkpoint import save_checkpoint as save_checkpoint_file
from locktune.runtime import distributed, placement
from locktune.runtime.pause_point import pause_point
from locktune.train.schedule import build_scheduler
from locktune.train.step import Batch, gradient_cached_step, mix_seed, whole_step
from locktune.train.unlock import image_unlock_schedule
from locktune.train.batchnorm import freeze_batchnorm, recalibrate_batchnorm, recalibration_rows


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
    training_pairs: int = 0  # pairs training drew from (after the validation hold-out and max_train_pairs)
    held_out_pairs: int = 0  # pairs held out for validation (data.validation_fraction)
    bn_recalibration_images: int = 0  # images the BN statistics were recomputed over (train.batchnorm)


# The parameters that start from scratch beside the towers: the heads (linear, mlp, blocks:N: every head is kept
# under these two names, `model/heads.py`), the temperature, the sigmoid bias.
HEAD_PARAMETERS = ("image_projection", "text_projection", "log_logit_scale", "logit_bias")


def _optimizer(model: TwoTower, config: RunConfig) -> torch.optim.Optimizer:
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_head = name.startswith(HEAD_PARAMETERS)
            # Biases, norms and the temperature (and the sigmoid loss's bias) are not decayed (as in CLIP/LiT trainers).
            decays = p.ndim >= 2 and "log_logit_scale" not in name
            groups.setdefault((is_head, decays), []).append(p)
    lr, mult, wd = config.train.lr, config.train.head_lr_multiplier, config.train.weight_decay
    fused = {"fused": True} if placement.model_device(model).type == "cuda" else {}  # one kernel for all tensors
    return torch.optim.AdamW([{"params": params, "lr": lr * (mult if head else 1.0), "weight_decay": wd if decays else 0.0}
                              for (head, decays), params in sorted(groups.items())], lr=lr, **fused)


def save_trained_model(model: TwoTower, run_dir: Path, state: dict) -> None:
    """The finished run's model as a saved-model folder (`run_dir/model/`): what eval, the API, index, serve,
    ablate and export load.  Only the first process writes."""
    from locktune.saved_model import RUN_MODEL_DIR, save_pretrained

    if distributed.is_main():
        save_pretrained(model, run_dir / RUN_MODEL_DIR, state=state)


@dataclass
class TrainingData:
    pairs: PairSet | None
    sharded: ShardedCache | None
    captions: object  # pair index -> its captions
    held_out: int = 0  # pairs held out for validation
    validation: PairSet | None = None  # those pairs (what train.eval_every's validation task scores)

    def corpus(self):  # for a from-scratch tokenizer
        return (caption for i in range(len(self.captions)) for caption in self.captions[i])


@dataclass
class TrainingState:
    """What a step changes and a checkpoint holds."""

    model: TwoTower
    optimizer: torch.optim.Optimizer
    scheduler: object
    unlock: object | None  # the image tower's unlock schedule, if any
    step: int = 0
    losses: list[float] = field(default_factory=list)
    bad_steps: list[int] = field(default_factory=list)
    bad_in_a_row: int = 0


def train(config: RunConfig, pairs: PairSet | None = None, resume: bool = False,
          stop_after: int | None = None, overwrite: bool = False) -> TrainResult:
    """Train per `config`; with `resume`, continue from the run folder's latest checkpoint exactly (refused when
    the saved config differs in a key that changes training).  A run folder that holds another run is refused
    unless `overwrite` (which removes that run's checkpoints and log first).  `stop_after` ends this call after
    that many steps in total (to test and to split long runs).

    The order of these steps is part of the contract: it fixes what the random streams see, so a resumed
    run continues bit for bit."""
    started = time.time()
    device = placement.resolve_device(config.train.device)
    placement.use(device)
    check_report_to(config.train.report_to)  # a sink's missing package and the evaluation's names: before any data
    eval_tasks = evaluation_tasks(config)
    run_dir = _prepare_run_folder(config, resume, overwrite)
    torch.manual_seed(config.train.seed)
    data = _training_data(config, pairs)
    checkpoint = _restore(run_dir, config) if resume else None
    if resume:
        _same_resume_step_everywhere(run_dir, checkpoint)
    model = build_model(config.model, corpus=data.corpus, loss=config.train.loss,
                        tokenizer_json=checkpoint["tokenizer_json"] if checkpoint else None, seed=config.train.seed)
    model.precision = config.train.precision
    _announce(model, config)
    _place(model, config, checkpoint, device)  # before the image side: a cache to compute runs on the device
    images = TrainingImages.open(model, config, data.pairs, data.sharded, data.captions)
    texts = TrainingTexts.open(model, config, data.captions, data.sharded)  # a locked text tower: cached rows
    plan = BatchPlan(images.caption_counts, config.train.batch_size, config.train.seed)
    state = _optimization(model, config, checkpoint, device)
    local = _rows_per_process(config)
    autocast = placement.tower_autocast(device, config.train.precision)
    trainable = [p for p in model.parameters() if p.requires_grad]
    end = min(config.train.steps, stop_after) if stop_after is not None else config.train.steps
    model.train()
    log = TrainingLog(run_dir, config, resumed_at=checkpoint["step"] if checkpoint else None, total=end - state.step)
    evaluation = TrainingEvaluation(config, eval_tasks, data.validation, run_dir, resumed=checkpoint is not None)
    # A process that dies or hangs fails the others' next collective: one line naming it and the step.
    with distributed.naming_failures(lambda: f"training step {state.step + 1}"):
        if checkpoint is None and evaluation.due(0):  # the starting point; a bad metric name fails here
            evaluation.run(model, 0, log.evaluation)
        while state.step < end:
            batch = _next_batch(state.step, plan, images, texts, data.captions, model, local, device)
            unlocked = state.unlock.apply(state.step) if state.unlock is not None else None  # sets BN modes
            if config.train.batchnorm == "freeze":
                freeze_batchnorm(model.image_tower)  # after every mode change: eval-mode BN throughout
            loss = _forward_backward(state, batch, config, autocast, local)
            pause_point("train-step")  # tests kill here: gradients computed, weights not yet updated
            loss_value, grad_norm = _update(state, loss, trainable, config, run_dir)
            log.step(state, loss_value, grad_norm, unlocked, end)
            if evaluation.due(state.step):
                evaluation.run(state.model, state.step, log.evaluation)
            if state.step % config.train.checkpoint_every == 0 or state.step == end:
                _save_checkpoint(state, config, run_dir, device)
                distributed.barrier()
    log.close()
    return _finish(state, config, run_dir, images, started, data, plan)


def _announce(model: TwoTower, config: RunConfig) -> None:
    """Before the first step: the image size the run uses and where it came from, and whether the model will
    export to transformers (so a pooling that will not is changed now, not found after training)."""
    from locktune.towers.describe import model_export_line

    if distributed.is_main():
        print(f"locktune: {image_size_line(config, model.preprocess.image_size)}", file=sys.stderr)
        print(f"locktune: {model_export_line(model.image_tower, model.text_tower)}", file=sys.stderr)


def _prepare_run_folder(config: RunConfig, resume: bool, overwrite: bool) -> Path:
    """The run folder, refusing to mix runs: a new run in a folder that holds another run's checkpoints or log
    needs `overwrite` (then those are removed first, so pruning and --resume only ever see this run's)."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    earlier = run_artifacts(run_dir)
    if earlier and not resume:
        if not overwrite:
            raise LocktuneError(f"run folder '{run_dir}' already holds a run ({earlier[0].name}); continue it with "
                                "--resume, start over with --overwrite, or choose another run_dir")
        distributed.barrier()  # every process has looked before the first one removes anything
        if distributed.is_main():
            remove_run(run_dir)
        distributed.barrier()
    if distributed.is_main():  # a checkpoint write killed earlier left its temporary file (checkpoint-sized)
        remove_stale_temporaries(run_dir)
    return run_dir


def _training_data(config: RunConfig, pairs: PairSet | None) -> TrainingData:
    """The pairs, less the validation hold-out and cut to data.max_train_pairs (`data/validation_split.py`), or the
    sharded cache (which holds the captions beside the vectors, so training from it decodes no image and loads
    no source)."""
    splits = config.data.validation_fraction or config.data.max_train_pairs
    if config.data.embedding_cache and splits:  # as `validate` says, for configs built in code
        raise LocktuneError("data.validation_fraction and data.max_train_pairs are not supported with a sharded "
                            "cache (data.embedding_cache); train from data.sources instead")
    sharded = ShardedCache.open(config.data.embedding_cache) if config.data.embedding_cache else None
    if sharded is None and pairs is None:
        pairs = load_pairs(config.data.sources, config.data.max_pairs_per_source)
    held_out = None
    if splits:
        source_count = len(pairs)
        pairs, held_out = split_pairs(pairs, config.data.validation_fraction, config.data.max_train_pairs)
        if distributed.is_main():
            print(f"locktune: {len(held_out)} of {source_count} pairs held out for validation "
                  f"(data.validation_fraction={config.data.validation_fraction:g}); training on {len(pairs)}"
                  + (f" (data.max_train_pairs={config.data.max_train_pairs})" if config.data.max_train_pairs else ""),
                  file=sys.stderr)
    return TrainingData(pairs, sharded, sharded.captions if sharded is not None else pairs.captions,
                        len(held_out) if held_out is not None else 0, held_out)


def _restore(run_dir: Path, config: RunConfig) -> dict | None:
    """The run's latest training checkpoint, after checking that it was written with the same training-relevant
    config.  Read without pickle (`checkpoint_format`): a run folder others can write to is no way to run code."""
    path = resume_point(run_dir)
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    check_resumable(upgrade_config_dict(checkpoint.get("config")), config.to_dict(), path)  # old key names read
    return checkpoint


def _same_resume_step_everywhere(run_dir: Path, checkpoint: dict | None) -> None:
    """Every rank must resume from the same step: a node that cannot see the run folder (a node-local disk)
    would otherwise start over while rank 0 resumes, and the global loss would mix two runs."""
    steps = distributed.gather_objects(checkpoint["step"] if checkpoint is not None else None)
    if len(set(steps)) > 1:
        seen = ", ".join(f"rank {r}: {'no checkpoint' if s is None else f'step {s}'}" for r, s in enumerate(steps))
        raise LocktuneError(f"--resume: the ranks see different checkpoints in '{run_dir}' ({seen}): the run folder "
                            "must be on a filesystem every node shares (docs/training-at-scale.md, Several nodes)")


def _place(model: TwoTower, config: RunConfig, checkpoint: dict | None, device: torch.device) -> None:
    """Checkpointed weights, the device, FSDP sharding and compilation."""
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    model.to(device)
    if config.train.parallel == "fsdp" and distributed.is_distributed():
        if model.setting.text_locked:
            raise LocktuneError("train.parallel=fsdp shards a trained text tower; this setting locks it")
        distributed.shard_text_tower(unwrap(model.text_tower))
    if config.train.grad_checkpointing:
        if model.setting.text_locked:
            raise LocktuneError("train.grad_checkpointing saves a trained text tower's memory; this setting locks it")
        unwrap(model.text_tower).enable_grad_checkpointing()
    if config.train.compile:
        unwrap(model.text_tower).compile()  # in place: parameter names (and checkpoints) unchanged


def _optimization(model: TwoTower, config: RunConfig, checkpoint: dict | None, device: torch.device) -> TrainingState:
    """Optimizer, unlock schedule and learning-rate schedule, restored with the position and random streams."""
    optimizer = _optimizer(model, config)
    # After the optimizer, which must hold the whole image tower before the schedule first freezes it.
    unlock = image_unlock_schedule(model, config.train.image_unlock_start, config.train.image_unlock_end)
    scheduler = build_scheduler(optimizer, config.train.warmup_steps, config.train.steps)
    state = TrainingState(model, optimizer, scheduler, unlock)
    if checkpoint is not None:
        if unlock is not None:
            unlock.freeze_stateless(checkpoint["optimizer"])
        distributed.load_optimizer_state(model, optimizer, checkpoint["optimizer"])
        if unlock is not None:
            unlock.release()  # every flag as built: the trainable list must hold the whole tower
        scheduler.load_state_dict(checkpoint["scheduler"])
        state.step, state.losses = checkpoint["step"], list(checkpoint["losses"])
        state.bad_steps = list(checkpoint.get("bad_steps", []))
        restore_rng(checkpoint["rng"], device)
    return state


def _rows_per_process(config: RunConfig) -> int:
    world = distributed.world_size()
    if config.train.batch_size % world:
        raise LocktuneError(f"train.batch_size ({config.train.batch_size}) must divide evenly over {world} processes")
    return config.train.batch_size // world


def _next_batch(step: int, plan: BatchPlan, images: TrainingImages, texts: TrainingTexts, captions, model: TwoTower,
                local: int, device: torch.device) -> Batch:
    """This process's slice of the step's global batch: the text side from `texts` (cached rows) or the captions
    tokenized, the image side from `images`; the same caption of each pair either way."""
    pair_rows, caption_choice = plan.batch(step)  # every process draws the same global batch
    mine = slice(distributed.rank() * local, (distributed.rank() + 1) * local)
    pair_ids, features, pixels = images.take([int(r) for r in pair_rows[mine]])
    draws = [int(c) for c in caption_choice[mine]]
    text_features = texts.take(pair_ids, draws)
    if text_features is not None:
        batch = Batch(None, None, text_features=text_features.to(device))
    else:
        tokens = model.tokenize([captions[p][c % len(captions[p])] for p, c in zip(pair_ids, draws)])
        batch = Batch(tokens["ids"].to(device), tokens["mask"].to(device))
    if features is not None:
        batch.features = features.to(device)
    else:
        batch.pixels = pixels.to(device).contiguous(memory_format=torch.channels_last)
    return batch


def _forward_backward(state: TrainingState, batch: Batch, config: RunConfig, autocast, local: int) -> torch.Tensor:
    state.optimizer.zero_grad(set_to_none=True)  # a frozen parameter's grad stays None: AdamW skips it
    # Latent mixup (train.mixup_alpha, `train/mixup.py`): both sides' cached features mixed before the heads.
    batch = mix_batch(batch, config.train.mixup_alpha, config.train.seed, state.step, distributed.rank() * local)
    if config.train.chunk_size and config.train.chunk_size < local:
        # Dropout seeded per (run seed, step, global row of the chunk): a pure function of the step, so
        # resume stays exact and the replay draws the no-graph pass's masks on every device.
        return gradient_cached_step(state.model, batch, autocast, config.train.chunk_size, config.train.loss,
                                    seed=mix_seed(config.train.seed, state.step),
                                    first_row=distributed.rank() * local)
    # Dropout (if any) seeded per block of global rows: the same masks in 1 and N processes, and on any device.
    return whole_step(state.model, batch, autocast, config.train.loss, seed=mix_seed(config.train.seed, state.step),
                      first_row=distributed.rank() * local, dropout_rows=config.train.dropout_rows)


def _update(state: TrainingState, loss: torch.Tensor, trainable: list, config: RunConfig,
            run_dir: Path) -> tuple[float, float]:
    """Average and clip the gradients, then step (or skip a non-finite step and count it); advance."""
    loss_value = distributed.mean_over_ranks(loss)  # identical on every rank, so all skip together
    distributed.average_gradients(distributed.replicated(trainable))
    grad_norm = float(distributed.clip_gradients(trainable, config.train.grad_clip))
    if math.isfinite(loss_value) and math.isfinite(grad_norm):
        state.optimizer.step()
        state.model.clamp_logit_scale()
        state.bad_in_a_row = 0
    else:
        _skip_bad_step(state, loss_value, grad_norm, config, run_dir)
    state.scheduler.step()
    state.step += 1
    state.losses.append(loss_value)
    return loss_value, grad_norm


def _skip_bad_step(state: TrainingState, loss_value: float, grad_norm: float, config: RunConfig,
                   run_dir: Path) -> None:
    """Skip the update, keep the data position and the schedule moving, count it; too many in a row stop."""
    state.bad_steps.append(state.step)
    state.bad_in_a_row += 1
    if distributed.is_main():
        print(f"locktune: step {state.step}: loss {loss_value} / gradient norm {grad_norm} is not finite; "
              f"update skipped ({state.bad_in_a_row} in a row, {len(state.bad_steps)} in all)", file=sys.stderr)
    if state.bad_in_a_row >= config.train.max_bad_steps:
        last = latest_checkpoint(run_dir)
        raise LocktuneError(
            f"the loss or gradient was NaN/Inf for {state.bad_in_a_row} steps in a row (steps "
            f"{state.bad_steps[-state.bad_in_a_row]}-{state.step}); stopped. Last good checkpoint: "
            f"{last or 'none yet'}. Lower train.lr, try train.precision=fp32, or check the data, then --resume")


def _save_checkpoint(state: TrainingState, config: RunConfig, run_dir: Path, device: torch.device) -> None:
    model_state, optimizer_state = distributed.full_state(state.model, state.optimizer)  # collective under FSDP
    rng = rng_states(device)  # every process's streams (a collective)
    if not distributed.is_main():
        return
    save_checkpoint_file({"model": model_state, "optimizer": optimizer_state,
                          "scheduler": state.scheduler.state_dict(), "step": state.step, "losses": state.losses,
                          "rng": rng, "bad_steps": state.bad_steps, "config": config.to_dict(),
                          "tokenizer_json": unwrap(state.model.text_tower).tokenizer_json()},
                         run_dir, state.step, config.train.keep_checkpoints)


class TrainingLog:
    """The progress bar, and every train.log_every-th step and every evaluation to the sinks of train.report_to
    (`report_to/`; first process only)."""

    def __init__(self, run_dir: Path, config: RunConfig, resumed_at: int | None, total: int):
        self.config = config
        self.main = distributed.is_main()
        self.sinks = Reporting.open(config.train.report_to, SinkContext(run_dir, config, resumed_at), self.main)
        self.bar = progress(total=total, desc=f"training {config.model.setting}", unit="step", enabled=self.main)
        self.pairs_seen, self.tick = 0, time.time()
        self.head_group: int | None = None  # the optimizer's first head group (`head_lr`), found at the first log

    def step(self, state: TrainingState, loss: float, grad_norm: float, unlocked: float | None, end: int) -> None:
        model = state.model
        self.pairs_seen += self.config.train.batch_size
        rate = self.pairs_seen / max(1e-9, time.time() - self.tick)
        self.bar.set_postfix(loss=f"{loss:.3f}", pairs_s=f"{rate:.0f}", T=f"{1 / model.scale.item():.3f}",
                             refresh=False)  # update() below draws it: one write per step
        self.bar.update(1)
        if self.main and (state.step % self.config.train.log_every == 0 or state.step == end):
            lrs = state.scheduler.get_last_lr()
            entry = {"loss": loss, "lr": lrs[0], "grad_norm": grad_norm, "scale": model.scale.item(),
                     "pairs_per_s": round(rate, 1)}
            head = self._head_group(state)
            if head is not None and lrs[head] != lrs[0]:  # train.head_lr_multiplier: the head's own rate
                entry["head_lr"] = lrs[head]
            if model.logit_bias is not None:
                entry["logit_bias"] = model.logit_bias.item()
            if unlocked is not None:
                entry["image_unlocked"] = round(unlocked, 4)  # share of image-tower layer groups trained
            self.sinks.log(state.step, entry)

    def _head_group(self, state: TrainingState) -> int | None:
        if self.head_group is None:
            heads = {id(p) for name, p in state.model.named_parameters() if name.startswith(HEAD_PARAMETERS)}
            self.head_group = next((i for i, group in enumerate(state.optimizer.param_groups)
                                    if group["params"] and id(group["params"][0]) in heads), -1)
        return self.head_group if self.head_group >= 0 else None

    def evaluation(self, step: int, values: dict[str, float], seconds: float) -> None:
        """An evaluation's numbers to every sink; its time is left out of the training rate (pairs/s)."""
        self.sinks.log(step, values, EVAL)
        self.tick += seconds

    def close(self) -> None:
        self.bar.close()
        self.sinks.close()


def _recalibrate(state: TrainingState, config: RunConfig, images: TrainingImages) -> int:
    """train.batchnorm=recalibrate: a trained image tower's BN statistics recomputed with the final weights
    (`train/batchnorm.py`); after the last checkpoint, so a resumed finished run recomputes the same."""
    if config.train.batchnorm != "recalibrate" or state.model.setting.image_locked or images.decoder is None:
        return 0
    rows = recalibration_rows(len(images.usable), config.train.bn_recalibration_images, config.train.seed)
    device = placement.model_device(state.model)
    # Through the decoder, not `take`: image_forward_passes counts training's passes; these are reported
    # apart (bn_recalibration_images).
    return recalibrate_batchnorm(unwrap(state.model.image_tower), lambda batch: images.decoder.pixels(batch)[0],
                                 rows, config.train.batch_size, device)


def _write_summary(run_dir: Path, config: RunConfig, data: TrainingData, recalibrated: int,
                   losses: list[float], plan: BatchPlan) -> None:
    """run_dir/training.json: what the data and batch norm were for this run, the fingerprint of its data order
    (`train/data_order.py`: what paired arms must share), and the first and last step's loss (what `demo`
    prints; train_log.jsonl holds every train.log_every-th step)."""
    if not distributed.is_main():
        return
    keys = data.sharded.keys if data.sharded is not None else data.pairs.images.keys
    summary = {"training_pairs": len(data.captions), "held_out_pairs": data.held_out,
               "validation_fraction": config.data.validation_fraction, "max_train_pairs": config.data.max_train_pairs,
               "batchnorm": config.train.batchnorm, "bn_recalibration_images": recalibrated,
               "data_order": data_order(plan, keys),
               "steps": len(losses), "first_loss": losses[0] if losses else None,
               "final_loss": losses[-1] if losses else None}
    (run_dir / "training.json").write_text(json.dumps(summary, indent=1) + "\n")


def _finish(state: TrainingState, config: RunConfig, run_dir: Path, images: TrainingImages,
            started: float, data: TrainingData, plan: BatchPlan) -> TrainResult:
    """A finished run recalibrates batch norm (train.batchnorm) and writes its saved-model folder; the model
    is returned in eval mode, all trainable."""
    if state.unlock is not None:
        state.unlock.release()  # the returned model's parameters all trainable again, as without a schedule
    recalibrated = 0
    if state.step == config.train.steps:
        recalibrated = _recalibrate(state, config, images)
        if recalibrated and distributed.is_main():
            print(f"locktune: batch norm statistics recalibrated over {recalibrated} training images",
                  file=sys.stderr)
        save_trained_model(state.model, run_dir, distributed.full_state(state.model, state.optimizer)[0])
        _write_summary(run_dir, config, data, recalibrated, state.losses, plan)
    distributed.barrier()
    state.model.eval()
    return TrainResult(state.model, state.losses, run_dir, state.step, images.forward_passes, images.skipped,
                       state.bad_steps, time.time() - started, len(data.captions), data.held_out, recalibrated)
