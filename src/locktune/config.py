"""Typed run configuration: dataclasses, loaded from YAML, overridden by `key.sub=value` arguments.

Every value is checked at load: an unknown key gets a did-you-mean, a wrong type names the key and the
type it wants. Names (towers, sources, benchmarks) are checked against their registries when used.
"""

from __future__ import annotations

import dataclasses
import math
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from locktune.errors import LocktuneError


@dataclass
class ModelConfig:
    setting: str = "LU"  # image letter then text letter, each L (locked), U (unlocked), u (from scratch)
    # A bundled name, or KIND:SPEC for a model you bring: hf:ID_OR_FOLDER (image or text),
    # timm:NAME[@FILE_OR_HUB_ID], open_clip:ARCH@PRETRAINED (image).  `locktune towers` lists them.
    image_tower: str = "efficientnet_lite0"
    text_tower: str = "minilm"
    # How a KIND:SPEC tower's output is pooled to one vector (see README "Your own towers").
    image_pool: str = "auto"  # auto | cls | mean | pooler
    text_pool: str = "auto"  # auto | mean | cls | eos | pooler
    embed_dim: int = 256
    # Both towers are followed by a trainable linear projection to embed_dim.  The temperature is
    # learned as log(logit_scale); big_vision's LiT configs start it at 10 (CLIP starts at 1/0.07).
    # linear | none.  none: no head on the image tower (the LiT paper's "no head" arm): the image embedding
    # is the normalised image-tower output itself, the text projection maps to that size, and embed_dim
    # is ignored.
    image_head: str = "linear"
    # The heads by name, per side (`model/heads.py`): image linear | none | mlp | blocks:N; text linear | mlp.
    # mlp: FuseMix's adapter (head_mlp_residual: pre-norm residual blocks at the tower's width, then a norm and a
    # linear map) or, residual off, a plain MLP (ShareLock's projector); head_mlp_depth hidden layers of
    # head_mlp_width (0: 4 x the tower's output width), activation gelu | relu | silu, dropout in [0, 1).
    text_head: str = "linear"
    head_mlp_depth: int = 1
    head_mlp_width: int = 0
    head_mlp_activation: str = "gelu"
    head_mlp_dropout: float = 0.0
    head_mlp_residual: bool = True
    # blocks:N image heads (N transformer blocks over the locked tower's token outputs, dino.txt): the blocks'
    # width (0: the tower's token width; else a linear projection to it first), attention heads (0: width / 64,
    # at least 1; must divide the width) and MLP width as a multiple of the width.
    head_blocks_width: int = 0
    head_blocks_heads: int = 0
    head_blocks_mlp_ratio: float = 4.0
    logit_scale_init: float = 10.0
    logit_scale_max: float = 100.0
    # train.loss=sigmoid only: the learned bias b of sigmoid(t * cos + b), from SigLIP (-10); kept within
    # +-logit_scale_max, beyond which every pair would get the same answer.
    logit_bias_init: float = -10.0
    # Pixels fed to the image tower (part of the embedding cache's key); 0: the tower's own pretraining size
    # (224 for the bundled towers, the image processor's for hf:, timm's data config for timm:).
    image_size: int = 0
    max_text_len: int = 16  # tokens, as in the paper
    # The from-scratch text towers' shape and vocabulary size: the CLIP-style transformer (own BPE) and the
    # T5-style encoder (own Unigram vocabulary), both trained on the captions.  (Named clip_* up to
    # locktune 0.1.0: those names are still read, see RENAMED.)
    text_width: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_vocab_size: int = 8000


@dataclass
class DataConfig:
    sources: list[str] = field(default_factory=lambda: ["openclipart", "emoji"])
    max_pairs_per_source: int = 0  # 0 = all
    image_workers: int = 1  # decode processes feeding the image tower
    recompute_corrupt_cache: bool = False  # a damaged embedding-cache entry: error (default) or recompute
    # A sharded cache from `locktune embed --sharded DIR`: train from it (vectors and captions) instead of
    # the sources; memory stays flat whatever its size.
    embedding_cache: str = ""
    # Share of the sources' pairs held out as an in-distribution validation split (0 <= f < 0.5), chosen by a
    # stable hash of each image's identity (`data/validation_split.py`): the same pairs for every seed and arm,
    # never trained on.
    validation_fraction: float = 0.0
    # After the hold-out, train on this many pairs (0 = all): a fixed, nested subset (the 1,000 inside the
    # 3,000), the same for every seed and arm.
    max_train_pairs: int = 0
    # A trained image tower (U?/u?): decode every training image once into a uint8 pixel cache and read it
    # each step (the same tensors as decoding every step, without the decode cost).
    decode_once: bool = True
    # A locked text tower (?L): compute every training caption's vector once (`cache/text_side.py`, or the text
    # vectors of a sharded cache built with an ?L setting) and read it each step, so an LL step runs only the
    # heads; false runs the text tower every step.
    text_cache: bool = True


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4
    # The projections and the temperature start from scratch even when a tower is pretrained; they may
    # learn faster than the pretrained towers (lr x this multiplier).
    head_lr_multiplier: float = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 30
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 3  # the newest N training checkpoints are kept
    max_bad_steps: int = 5  # NaN/Inf loss or gradient: updates are skipped; this many in a row stops the run
    log_every: int = 10
    # batch_size is the global batch: under torchrun each of N processes takes batch_size / N rows.
    # global: softmax, negatives gathered from every process | local: softmax, own rows only |
    # sigmoid: SigLIP's pairwise sigmoid over the global batch, with a learned bias (model.logit_bias_init)
    loss: str = "global"
    # Latent mixup (FuseMix): each step, one lambda ~ Beta(alpha, alpha) and one permutation of the rows mix
    # the cached image features and the cached text features alike (pair i with pair perm[i]), before the
    # heads.  Needs both towers locked (model.setting=LL) and a pooled image head.  0: off.
    mixup_alpha: float = 0.0
    chunk_size: int = 0  # >0: gradient caching in chunks of this many rows (huge batches); 0: whole batch
    # Without chunk_size, a trained tower with dropout runs in seeded blocks of this many rows (one graph), so each
    # global row's dropout masks, and the loss, do not depend on the process count when it divides each process's
    # rows; 0: the batch at once, masks from the running stream (1 and N processes then differ by dropout draws).
    # Smaller blocks cost speed (benchmarks/dropout_blocks.py, MiniLM, 256 rows on 2 CPU cores: blocks of 64 -19%,
    # of 128 -12%); 256 keeps per-process batches up to 256 in one block
    dropout_rows: int = 256
    parallel: str = "replicate"  # replicate (DDP-style) | fsdp (shard the text tower over processes)
    compile: bool = False  # torch.compile the text tower
    grad_checkpointing: bool = False  # recompute the text tower's blocks in backward: less memory, same gradients
    # Where every stage runs (embed, train, eval, index, serve): auto (CUDA when visible, else CPU) | cpu | cuda |
    # cuda:N | any torch device string | fakegpu (the tests' CPU-backed second device).  `--device` sets it.
    device: str = "auto"
    # A trained image tower (U?/u?) locked for the first steps, then unlocked: before image_unlock_start
    # it is frozen (no gradients, batch norm and dropout in eval mode); from there to image_unlock_end its
    # layer groups unlock from the top (output side) down, a linearly growing share; from image_unlock_end
    # on it trains whole.  start == end == N: locked for N steps, then unlocked at once.  0/0: trained
    # from the start.
    image_unlock_start: int = 0
    image_unlock_end: int = 0
    # Batch norm in a trained image tower.  recalibrate: trained as usual, then after the last step its
    # running statistics are recomputed over bn_recalibration_images training images with the final weights
    # (the running averages trail weights that kept moving) | freeze: eval mode throughout (running
    # statistics as pretrained; scale and shift still train) | train: trained as usual, nothing after.
    batchnorm: str = "recalibrate"
    bn_recalibration_images: int = 2048
    # Where training reports its numbers, first process only (`report_to/`, docs/watching-training.md):
    # jsonl (train_log.jsonl, eval_log.jsonl) | tensorboard (RUN/tensorboard) | wandb (RUN/wandb, offline unless
    # $WANDB_MODE says otherwise).
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])
    # Every N steps (and before the first), the first process evaluates eval_suite and reports it to every
    # sink; the others wait.  0: no evaluation during training.  Training is the same with it as without.
    eval_every: int = 0
    # What eval_every runs, a list of: validation (the held-out pairs, data.validation_fraction > 0) | a suite
    # name (eval/suites.py) | a benchmark name (sized by eval.max_images_per_benchmark).
    eval_suite: list[str] = field(default_factory=lambda: ["validation"])
    # TASK/METRIC[:max|:min] (e.g. validation/image_to_text_R@1, fashion_mnist/top1): keep the model of the best
    # evaluation so far in RUN/best/ (a saved-model folder, with best.json: metric, value, step).  The direction is
    # min for a metric named *loss*, max otherwise, unless given.  "": none.
    keep_best: str = ""


@dataclass
class EvalConfig:
    benchmarks: list[str] = field(
        default_factory=lambda: ["fashion_mnist", "animal_mnist", "tuxpaint_categories", "tuxpaint_retrieval"]
    )
    max_images_per_benchmark: int = 1000  # sampled evenly over classes, with a fixed seed; 0 = all
    # `locktune eval`: a named suite of tasks (offline, ablation, ...) run before `benchmarks` (a benchmark
    # the suite already covers is not run twice); plots: write the plots beside the results.
    suite: str = ""
    plots: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run_dir: str = "runs/default"

    def __post_init__(self) -> None:
        # Not fields (never in to_dict, never a config key): where each key's value came from when the
        # config was loaded ("model.image_size" -> "demo.yaml" | "the command line"), and the notes the
        # load left (a clamped warm-up, a file's image size set aside, an old key name).
        self.origins: dict[str, str] = {}
        self.notes: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys renamed or removed: configs, run records and saved models written before still load.
# old key -> new key.  The clip_* keys also sized the T5-style tower, which is not CLIP.
RENAMED = {"model.clip_width": "model.text_width", "model.clip_layers": "model.text_layers",
           "model.clip_heads": "model.text_heads", "model.clip_vocab_size": "model.text_vocab_size"}
# old key -> why it is gone.  eval.batch_size was never read (evaluators batch by their own sizes).
REMOVED = {"eval.batch_size": "it was never read"}


def upgrade_config_dict(data: Any, notes: list[str] | None = None, where: str = "") -> Any:
    """A config tree (a file, an override, a record's or saved model's `config`) with renamed keys under their
    new names and removed keys dropped; each change adds one line to `notes` when given.  Anything that is not
    a mapping of sections is returned as it is (the checks that follow name it)."""
    if not isinstance(data, dict):
        return data
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in RENAMED.items():
        section, key = old.split(".")
        values = out.get(section)
        if isinstance(values, dict) and key in values:
            value = values.pop(key)
            new_key = new.split(".")[1]
            if new_key not in values:  # the new name wins where both are given
                values[new_key] = value
            if notes is not None:
                notes.append(f"{where}{old} is now called {new}; the old name still works but will go")
    for old, why in REMOVED.items():
        section, key = old.split(".")
        values = out.get(section)
        if isinstance(values, dict) and key in values:
            values.pop(key)
            if notes is not None:
                notes.append(f"{where}{old} is ignored ({why}); remove it")
    return out


PRECISIONS = ("fp32", "bf16")
PARALLEL = ("replicate", "fsdp")
# The heads each side may name (`model/heads.py` builds them; tests/test_heads.py keeps both lists the same).
IMAGE_HEADS = ("linear", "none", "mlp", "blocks:N")
TEXT_HEADS = ("linear", "mlp")
HEAD_ACTIVATIONS = ("gelu", "relu", "silu")
BATCHNORM = ("recalibrate", "train", "freeze")


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Coerce `value` to the annotated type where that is lossless, else raise naming the key."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise LocktuneError(f"config key '{key}' wants a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if annotation in (int, float, str, bool):
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise LocktuneError(f"config key '{key}' wants {annotation.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation} for {key}")


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise LocktuneError(f"unknown config key '{full}'{hint}; valid keys here: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise LocktuneError(f"config key '{full}' is a section; give it as {full}.<key>=value")
            _apply(current, value, f"{full}.")
        else:
            setattr(obj, key, _check_type(full, value, hints[key]))


def read_yaml(text: str, where: str) -> Any:
    """YAML text -> data, or one line naming where the syntax error is."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise LocktuneError(f"{where} is not valid YAML{at}: {problem}") from None


def parse_override(text: str) -> dict[str, Any]:
    """`train.steps=100` -> {"train": {"steps": 100}} (the value parsed as YAML)."""
    if "=" not in text:
        raise LocktuneError(f"override '{text}' should look like key.sub=value (e.g. train.steps=100)")
    key, raw = text.split("=", 1)
    value = read_yaml(raw, f"the value of override '{text}'") if raw.strip() else ""
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def validate(config: RunConfig) -> RunConfig:
    """Each number's own range first (so `train.steps=-5` is named as itself, not as a schedule that no longer
    fits), then names, then the checks across fields."""
    from locktune.towers.setting import parse_setting

    _validate_counts(config)
    _validate_numbers(config)
    parse_setting(config.model.setting)
    _validate_towers(config)
    if config.train.precision not in PRECISIONS:
        raise LocktuneError(f"train.precision '{config.train.precision}' is not one of {', '.join(PRECISIONS)}")
    from locktune.loss import get_loss

    get_loss(config.train.loss)  # the loss registry owns the names
    from locktune.runtime.placement import check_device_word

    check_device_word(config.train.device, "train.device")
    if config.train.parallel not in PARALLEL:
        raise LocktuneError(f"train.parallel '{config.train.parallel}' is not one of {', '.join(PARALLEL)}")
    _validate_heads(config)
    if config.train.batchnorm not in BATCHNORM:
        raise LocktuneError(f"train.batchnorm '{config.train.batchnorm}' is not one of {', '.join(BATCHNORM)}")
    _validate_unlock(config)
    _validate_data_subset(config)
    _validate_reporting(config)
    if config.train.dropout_rows < 0:
        raise LocktuneError("train.dropout_rows must be 0 (the batch at once) or a positive number of rows")
    if config.train.warmup_steps > config.train.steps:
        # A short trial run of a longer recipe (demo.yaml's 20 warm-up steps, train.steps=5): warm up over the
        # whole run rather than refuse it.
        config.notes.append(f"train.warmup_steps ({config.train.warmup_steps}) is longer than the run: clamped "
                            f"to train.steps ({config.train.steps})")
        config.train.warmup_steps = config.train.steps
    if not config.data.sources:
        raise LocktuneError("data.sources is empty; name at least one pair source")
    return config


# Whole numbers and their least value; for those that may be 0, what 0 means.
COUNTS = {
    "train.steps": (1, ""), "train.batch_size": (1, ""), "train.checkpoint_every": (1, ""),
    "train.keep_checkpoints": (1, ""), "train.max_bad_steps": (1, ""), "train.log_every": (1, ""),
    "train.bn_recalibration_images": (1, ""), "train.warmup_steps": (0, "no warm-up"),
    "train.chunk_size": (0, "off: the whole batch at once"), "train.seed": (0, "a seed like any other"),
    "train.eval_every": (0, "no evaluation during training"),
    "train.image_unlock_start": (0, "unlocked from the start; 0 <= start <= end <= train.steps"),
    "train.image_unlock_end": (0, "unlocked from the start; 0 <= start <= end <= train.steps"),
    "model.embed_dim": (1, ""), "model.max_text_len": (1, ""), "model.text_width": (1, ""),
    "model.head_mlp_depth": (1, ""), "model.head_mlp_width": (0, "4 x the tower's output width"),
    "model.text_layers": (1, ""), "model.text_heads": (1, ""), "model.text_vocab_size": (1, ""),
    "model.image_size": (0, "the tower's own size"), "data.max_pairs_per_source": (0, "all"),
    "model.head_blocks_width": (0, "the tower's token width"), "model.head_blocks_heads": (0, "width / 64"),
    "data.image_workers": (0, "decode in the training process"), "data.max_train_pairs": (0, "all"),
    "eval.max_images_per_benchmark": (0, "all"),
}


def _validate_counts(config: RunConfig) -> None:
    """Every whole number in its range, each named as itself, before any check that combines two."""
    for key, (least, zero) in COUNTS.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value < least:
            bound = "at least 1" if least == 1 else f"0 or more (0: {zero})"
            raise LocktuneError(f"config key '{key}' must be {bound}, got {value}")


def _validate_numbers(config: RunConfig) -> None:
    """Rates, decays and scales: finite and in range, checked before any data or model is loaded."""
    t, m = config.train, config.model
    for key, value, low, low_ok in [("train.lr", t.lr, 0.0, False), ("train.head_lr_multiplier", t.head_lr_multiplier, 0.0, False),
                                    ("train.weight_decay", t.weight_decay, 0.0, True), ("train.grad_clip", t.grad_clip, 0.0, False),
                                    ("model.logit_scale_max", m.logit_scale_max, 0.0, False),
                                    ("model.logit_scale_init", m.logit_scale_init, 0.0, False),
                                    ("model.head_blocks_mlp_ratio", m.head_blocks_mlp_ratio, 0.0, False)]:
        if not math.isfinite(value) or value < low or (value == low and not low_ok):
            bound = f">= {low:g}" if low_ok else f"> {low:g}"
            raise LocktuneError(f"config key '{key}' must be a finite number {bound}, got {value!r}")
    if not math.isfinite(m.logit_bias_init) or abs(m.logit_bias_init) > m.logit_scale_max:
        raise LocktuneError(f"config key 'model.logit_bias_init' must be a finite number within "
                            f"+-model.logit_scale_max ({m.logit_scale_max:g}), got {m.logit_bias_init!r}")
    if m.logit_scale_init > m.logit_scale_max:
        raise LocktuneError(f"model.logit_scale_init ({m.logit_scale_init:g}) is above model.logit_scale_max "
                            f"({m.logit_scale_max:g}); the temperature would start clamped")


def _check_head_name(key: str, name: str, valid: tuple[str, ...]) -> None:
    """One side's head name: a listed name, or `blocks:N` with N at least 1 where `blocks:N` is listed."""
    kind, sep, count = name.partition(":")
    if name in valid or (sep and f"{kind}:N" in valid and count.isdigit() and int(count) >= 1):
        return
    if f"{kind}:N" in valid:
        raise LocktuneError(f"{key} '{name}' needs a number of blocks of at least 1, e.g. {kind}:2")
    names = [v.split(":")[0] for v in valid]
    close = difflib.get_close_matches(kind, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    image_only = " (none and blocks:N are image heads)" if key.endswith("text_head") and kind in ("none", "blocks") \
        else ""
    raise LocktuneError(f"{key} '{name}' is not one of {', '.join(valid)}{hint}{image_only}")


def _validate_heads(config: RunConfig) -> None:
    """Both heads' names, the mlp head's options, and latent mixup (which mixes both sides' cached pooled
    features, so it needs both towers locked and a head that reads pooled features)."""
    m, t = config.model, config.train
    _check_head_name("model.image_head", m.image_head, IMAGE_HEADS)
    _check_head_name("model.text_head", m.text_head, TEXT_HEADS)
    if m.head_mlp_activation not in HEAD_ACTIVATIONS:
        raise LocktuneError(f"model.head_mlp_activation '{m.head_mlp_activation}' is not one of "
                            f"{', '.join(HEAD_ACTIVATIONS)}")
    if not math.isfinite(m.head_mlp_dropout) or not 0.0 <= m.head_mlp_dropout < 1.0:
        raise LocktuneError(f"config key 'model.head_mlp_dropout' must be at least 0 and below 1, "
                            f"got {m.head_mlp_dropout!r}")
    if not math.isfinite(t.mixup_alpha) or t.mixup_alpha < 0:
        raise LocktuneError(f"config key 'train.mixup_alpha' must be 0 (off) or a finite number > 0, "
                            f"got {t.mixup_alpha!r}")
    if t.mixup_alpha and m.setting != "LL":
        raise LocktuneError(f"train.mixup_alpha={t.mixup_alpha:g} mixes both sides' cached features, but setting "
                            f"'{m.setting}' trains a tower; use model.setting=LL or train.mixup_alpha=0")
    if t.mixup_alpha and not config.data.text_cache:
        raise LocktuneError(f"train.mixup_alpha={t.mixup_alpha:g} mixes cached text features, but "
                            "data.text_cache=false runs the text tower; set data.text_cache=true or "
                            "train.mixup_alpha=0")
    if t.mixup_alpha and m.image_head.startswith("blocks"):
        raise LocktuneError(f"train.mixup_alpha={t.mixup_alpha:g} mixes pooled features, but model.image_head="
                            f"{m.image_head} reads tokens; use a linear or mlp image head, or train.mixup_alpha=0")


def _validate_data_subset(config: RunConfig) -> None:
    """The validation hold-out, the training subset and the recalibration count."""
    d = config.data
    if not math.isfinite(d.validation_fraction) or not 0.0 <= d.validation_fraction < 0.5:
        raise LocktuneError(f"data.validation_fraction must be at least 0 and below 0.5, got {d.validation_fraction!r}")
    if d.max_train_pairs < 0:
        raise LocktuneError(f"data.max_train_pairs must be 0 (all) or a number of pairs, got {d.max_train_pairs}")
    if d.embedding_cache and (d.validation_fraction or d.max_train_pairs):
        raise LocktuneError("data.validation_fraction and data.max_train_pairs choose pairs of the sources; a "
                            "sharded cache (data.embedding_cache) is not split: train from data.sources instead")
    if config.train.bn_recalibration_images < 1:
        raise LocktuneError(f"train.bn_recalibration_images must be at least 1, got "
                            f"{config.train.bn_recalibration_images}")


def _validate_reporting(config: RunConfig) -> None:
    """train.report_to's names and evaluation during training (the suite's names and the packages are checked
    when training starts: `train/periodic_eval.py`, `report_to/`)."""
    from locktune.report_to import sink_names

    t = config.train
    unknown = [name for name in t.report_to if name not in sink_names()]
    if unknown:
        raise LocktuneError(f"train.report_to '{unknown[0]}' is not one of {', '.join(sink_names())}")
    if t.keep_best and not t.eval_every:
        raise LocktuneError(f"train.keep_best={t.keep_best} needs evaluations to compare: set train.eval_every=N too")
    if t.eval_every and not t.eval_suite:
        raise LocktuneError("train.eval_suite is empty; name what train.eval_every evaluates (e.g. validation)")
    if t.eval_every and t.parallel == "fsdp":
        raise LocktuneError("train.eval_every evaluates on the first process alone, which needs the whole model: "
                            "not supported with train.parallel=fsdp (evaluate the saved model instead)")


def _validate_towers(config: RunConfig) -> None:
    """Tower names and pooling, checked before any model or data is loaded."""
    from locktune.towers.image import check_image_tower_name
    from locktune.towers.image.base import IMAGE_POOLS
    from locktune.towers.text import check_text_tower_name
    from locktune.towers.text.hf_text import TEXT_POOLS

    check_image_tower_name(config.model.image_tower)
    check_text_tower_name(config.model.text_tower)
    if config.model.image_pool not in IMAGE_POOLS:
        raise LocktuneError(f"model.image_pool '{config.model.image_pool}' is not one of {', '.join(IMAGE_POOLS)}")
    if config.model.text_pool not in TEXT_POOLS:
        raise LocktuneError(f"model.text_pool '{config.model.text_pool}' is not one of {', '.join(TEXT_POOLS)}")
    if config.model.image_size < 0:
        raise LocktuneError(f"model.image_size must be 0 (the tower's own size) or a number of pixels, "
                            f"got {config.model.image_size}")


def _validate_unlock(config: RunConfig) -> None:
    start, end, steps = config.train.image_unlock_start, config.train.image_unlock_end, config.train.steps
    if not 0 <= start <= end <= steps:
        raise LocktuneError(f"train.image_unlock_start ({start}) and train.image_unlock_end ({end}) must satisfy "
                            f"0 <= start <= end <= train.steps ({steps})")
    if (start or end) and config.model.setting[:1] == "L":
        raise LocktuneError(f"train.image_unlock_start/end schedule unlocking a trained image tower, but setting "
                            f"'{config.model.setting}' locks it throughout; use a 'U?' setting "
                            f"(e.g. U{config.model.setting[1:]}) or leave both at 0")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                file_size_for_every_tower: bool = False) -> RunConfig:
    """Defaults, then the YAML file (if any), then each override in order; validated.  Each key set records
    where it came from (`RunConfig.origins`).  The file's `model.image_size` was chosen for the file's image tower:
    it is set aside when the overrides pick a tower of another recipe (`scope_image_size`) unless
    `file_size_for_every_tower` (an ablation grid, whose base file sizes every arm) or an override sets the size
    too.  Notes (a clamped warm-up, an old key name, a size set aside) go to stderr."""
    config = RunConfig()
    file_tower = config.model.image_tower
    if path is not None:
        from locktune.packaged import find_config

        path = find_config(path)
        data = read_yaml(path.read_text(), f"config file '{path}'") or {}
        if not isinstance(data, dict):
            raise LocktuneError(f"config file '{path}' should hold a mapping of sections (model:, train:, ...)")
        data = upgrade_config_dict(data, config.notes, f"config file '{path.name}': ")
        _apply(config, data)
        _record_origins(config, data, path.name)
        file_tower = config.model.image_tower
    for text in overrides:
        data = upgrade_config_dict(parse_override(text), config.notes, f"override '{text}': ")
        _apply(config, data)
        _record_origins(config, data, "override")
    if not file_size_for_every_tower:
        scope_image_size(config, file_tower)
    validate(config)
    print_notes(config)
    return config


def _record_origins(config: RunConfig, data: dict[str, Any], origin: str) -> None:
    for section, values in data.items():
        for key in values if isinstance(values, dict) else ():
            config.origins[f"{section}.{key}"] = origin
        if not isinstance(values, dict):
            config.origins[section] = origin


def size_recipe(tower: str) -> str:
    """Which towers a config's image size carries over between: the bundled towers share one recipe (224 px
    ImageNet CNNs, one normalisation, no position embeddings); a KIND:SPEC tower has its own processor."""
    from locktune.towers.kinds import split_kind

    return "bundled" if split_kind(tower)[0] is None else tower


def scope_image_size(config: RunConfig, file_tower: str) -> None:
    """A config file's `model.image_size` applies to the tower it was written for (and the bundled towers of the
    same recipe); for a tower the overrides brought (`model.image_tower=hf:./dinov2` with demo.yaml's 128 px) the
    tower's own processor decides, unless an override set the size too.  Stretching a ViT's position
    embeddings to another size without a word is the surprise this prevents."""
    origin = config.origins.get("model.image_size")
    if origin in (None, "override") or size_recipe(config.model.image_tower) == size_recipe(file_tower):
        return
    config.notes.append(f"{origin}'s model.image_size={config.model.image_size} is for {file_tower}, not "
                        f"{config.model.image_tower}: the tower's own size is used (give model.image_size=N to "
                        "choose one)")
    config.origins["model.image_size"] = f"{origin}, set aside"
    config.model.image_size = 0


def image_size_line(config: RunConfig, used: int) -> str:
    """What a run prints before it runs: the image size used and where it came from."""
    origin = config.origins.get("model.image_size", "")
    if config.model.image_size and origin == "override":
        why = "model.image_size on the command line"
    elif config.model.image_size and origin:
        why = f"model.image_size from {origin}"
    elif config.model.image_size:
        why = "model.image_size"
    else:
        from locktune.towers.kinds import split_kind

        kind = split_kind(config.model.image_tower)[0]
        why = {None: "the tower's own size", "hf": "the tower's processor"}.get(kind, "the tower's data config")
        if origin.endswith("set aside"):
            why += f"; {origin.split(',')[0]}'s model.image_size is for another tower"
    return f"image size {used} px ({why})"


def print_notes(config: RunConfig) -> None:
    """The load's notes on stderr, once per run (the first process under torchrun)."""
    import os
    import sys

    if os.environ.get("RANK", "0") == "0":
        for note in config.notes:
            print(f"locktune: {note}", file=sys.stderr)
    config.notes.clear()


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A config stored with a run, a record or a saved model: old key names read, removed keys dropped,
    without notes (the file is not the reader's to fix)."""
    config = RunConfig()
    _apply(config, upgrade_config_dict(data))
    return validate(config)
