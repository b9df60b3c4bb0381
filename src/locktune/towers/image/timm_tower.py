"""`timm:NAME` and `timm:NAME@FILE_OR_HUB_ID` image towers (optional extra: pip install 'locktune[timm]').

Weights come from FILE, or from the hub repo (the model's default one when none is named) in the local
Hugging Face cache; never downloaded unless the user allows it (`towers/hub.py`).  A repo named after `@`
brings its own `config.json` (timm's `push_to_hub` format: preprocessing and model arguments), read for `u`
too, so both letters build the same architecture.  The checkpoint must fill every parameter of the model
(timm itself loads leniently once the classifier is dropped: a checkpoint of another architecture would
silently leave random weights).

Preprocessing is timm's pretrained data config as `timm.data.create_transform` applies it for evaluation:
crop_mode `center` resizes the shorter side to floor(size / crop_pct) and centre-crops `size`; `squash`
with crop_pct 1 stretches to `size` x `size`.  Other modes are refused rather than approximated.

Pooling: `auto`/`pooler` is timm's own head pooling (num_classes=0); `cls` and `mean` pool the token or
feature map output of `forward_features` (prefix tokens left out of the mean).  Vision transformers are
built with timm's `dynamic_img_size`, so `model.image_size` other than the pretraining size works (the
position embedding is resampled; outputs at the native size are unchanged).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from locktune.errors import LocktuneError
from locktune.towers.hub import read_json, resolve_model, weight_files
from locktune.towers.image.base import IMAGE_TOWER_KINDS, ImageTower, ImageTowerArgs, file_sha256
from locktune.towers.image.optional import checked_preprocess, first_line, import_extra, probe_dim, split_spec
from locktune.towers.image.preprocess import RESAMPLE, Preprocess

SAVED_OPTIONS = "locktune_tower.json"
# timm's own preference among a hub repo's weight files (open_clip's are for open_clip, unless the
# model's pretrained config names one: timm converts some CLIP towers from them).
TIMM_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
SAFE_ALTERNATIVE = {"pytorch_model.bin": "model.safetensors",
                    "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}


def _pretrained_cfg(timm, name: str, what: str) -> dict:
    """timm's registered pretrained config for NAME (its default tag when none is given); {} when none."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as error:  # an unknown pretrained tag
        raise LocktuneError(f"{what}: {first_line(error)}") from None
    return cfg.to_dict(remove_null=False) if cfg is not None else {}


def _repo_config(folder: Path, timm, what: str) -> tuple[dict, dict]:
    """A timm hub repo's config.json -> (pretrained-config overlay, model arguments); empty when absent."""
    if not (folder / "config.json").is_file():
        return {}, {}
    cfg = read_json(folder / "config.json", what)
    if "pretrained_cfg" in cfg:
        overlay = dict(cfg["pretrained_cfg"] or {})
    else:  # timm's legacy single-dict form
        overlay = {k: v for k, v in cfg.items() if k not in ("architecture", "num_features", "labels")}
    if "num_classes" in cfg:
        overlay["num_classes"] = cfg["num_classes"]
    model_args = dict(cfg.get("model_args") or {})
    model_args.pop("num_classes", None)  # the tower decides its head
    if model_args.get("img_size") is not None and overlay.get("fixed_input_size") and overlay.get("input_size"):
        size = model_args["img_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        overlay["input_size"] = (overlay["input_size"][0], *size)
    # Where the weights come from is locktune's decision (the file resolved here), not the repo's.
    known = {field.name for field in dataclasses.fields(timm.models.PretrainedCfg)}
    dropped = {"hf_hub_id", "hf_hub_filename", "source", "file", "url", "state_dict", "label_names",
               "label_descriptions"}
    return {k: v for k, v in overlay.items() if k in known - dropped}, model_args


def _hub_weights(folder: Path, preferred: str | None, what: str) -> Path:
    names = ([SAFE_ALTERNATIVE.get(preferred, preferred), preferred] if preferred else []) + list(TIMM_FILES)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    others = [p for p in weight_files(folder) if not p.name.startswith("open_clip")]
    if others:
        return others[0]
    raise LocktuneError(f"{what}: '{folder}' holds no timm weight file ({', '.join(names[:2])})")


def _checkpoint_shapes(path: Path) -> dict[str, tuple] | None:
    """Parameter names and shapes in a checkpoint file, as timm's loader would unwrap it (None: unreadable
    here, e.g. an .npz that the model's own loader reads)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if path.suffix not in (".bin", ".pth", ".pt", ".ckpt", ".tar"):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    return {k.removeprefix("module."): tuple(v.shape) for k, v in checkpoint.items() if hasattr(v, "shape")}


def _head_classes(shapes: dict[str, tuple] | None, cfg: dict) -> int | None:
    """How many classes the checkpoint's classifier has (0: no classifier; None: cannot tell)."""
    if shapes is None:
        return None
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    rows = [shapes[f"{n}.weight"][0] for n in names if f"{n}.weight" in shapes]
    return rows[0] - int(cfg.get("label_offset") or 0) if rows else 0


def preprocess_from_timm(model, timm, what: str) -> Preprocess:
    """timm's evaluation transform for the model's pretrained config, as a locktune Preprocess."""
    config = timm.data.resolve_data_config({}, model=model)
    _, height, width = config["input_size"]
    if height != width:
        raise LocktuneError(f"{what}: input size {height}x{width} is not square; locktune feeds square images")
    mean, std = tuple(float(x) for x in config["mean"]), tuple(float(x) for x in config["std"])
    if len(mean) != 3 or len(std) != 3:
        raise LocktuneError(f"{what}: mean/std {mean} / {std} are not RGB; locktune feeds RGB images")
    resample = str(config.get("interpolation") or "bilinear")
    if resample not in RESAMPLE:
        raise LocktuneError(f"{what}: timm interpolation '{resample}' is not one of {', '.join(RESAMPLE)}")
    crop_pct = float(config.get("crop_pct") or timm.data.DEFAULT_CROP_PCT)
    mode = config.get("crop_mode") or "center"
    scale = math.floor(height / crop_pct)  # as timm's transforms_imagenet_eval
    if mode == "center" and scale >= height:
        return Preprocess(height, mean, std, resize="shortest_edge", resample=resample, resize_to=scale,
                          crop_round="half_even")  # torchvision's CenterCrop
    if mode == "squash" and scale == height:
        return Preprocess(height, mean, std, resize="stretch", resample=resample)
    raise LocktuneError(f"{what}: timm's crop_mode '{mode}' with crop_pct {crop_pct} is not a transform locktune "
                        "reproduces (it does crop_mode center, and squash with crop_pct 1)")


def create_model(timm, name: str, what: str, dynamic: bool | None, **kwargs):
    """timm.create_model with `dynamic_img_size` where the architecture takes it (dynamic None: try it).
    Returns (model, dynamic)."""
    try:
        if dynamic is not False:
            try:
                return timm.create_model(name, dynamic_img_size=True, **kwargs), True
            except TypeError as error:
                if "dynamic_img_size" not in str(error):
                    raise
        return timm.create_model(name, **kwargs), False
    except LocktuneError:
        raise
    except Exception as error:  # an unknown model name, a checkpoint of another architecture, a damaged file
        raise LocktuneError(f"{what}: {first_line(error)}") from None


class TimmTower(ImageTower):
    def __init__(self, spec: str, args: ImageTowerArgs):
        super().__init__()
        self.name = f"timm:{spec}"
        what, model_name, source = split_spec("timm", spec, "timm:NAME, timm:NAME@ORG/REPO (read from the local "
                                              "Hugging Face cache) or timm:NAME@FILE")
        timm = import_extra("timm", "timm", what)
        import timm.data  # noqa: F401
        import timm.models  # noqa: F401

        if not timm.models.is_model(model_name):
            raise LocktuneError(f"{what}: timm {timm.__version__} has no model '{model_name}' (see timm.list_models())")
        self.pretrained, self.weights_file = args.pretrained, None
        if args.saved is not None:
            options = read_json(Path(args.saved) / SAVED_OPTIONS, what)
            overlay, model_args = dict(options.get("pretrained_cfg") or {}), dict(options.get("model_args") or {})
            self.model, self.dynamic = self._build(timm, model_name, what, overlay, model_args,
                                                   options.get("dynamic"))
        else:
            options = {}
            overlay, model_args, folder = {}, {}, None
            is_file = bool(source) and Path(source).expanduser().is_file()
            if source and not is_file:  # a hub repo the user named: its config shapes L and u alike
                folder = resolve_model(source, what).folder
                overlay, model_args = _repo_config(folder, timm, what)
            if args.pretrained:
                if is_file:
                    self.weights_file = Path(source).expanduser().resolve()
                else:
                    cfg = _pretrained_cfg(timm, model_name, what)
                    if folder is None:
                        if not cfg.get("hf_hub_id"):
                            raise LocktuneError(f"{what}: timm has no hub repo for '{model_name}'; give the weights "
                                                f"as timm:{model_name}@FILE or timm:{model_name}@ORG/REPO")
                        folder = resolve_model(cfg["hf_hub_id"], what).folder
                    self.weights_file = _hub_weights(folder, cfg.get("hf_hub_filename") if not source else None,
                                                     what)
                self.model, self.dynamic = self._load(timm, model_name, what, overlay, model_args)
            else:
                self.model, self.dynamic = self._build(timm, model_name, what, overlay, model_args, None)
        self.overlay, self.model_args = overlay, model_args
        self.native = (Preprocess.from_description(options["preprocess"]) if "preprocess" in options
                       else preprocess_from_timm(self.model, timm, what))
        self.prefix = int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        self.channels_last = getattr(self.model, "output_fmt", "NCHW") == "NHWC"  # Swin-like feature maps
        self.pool = options.get("pool") or ("pooler" if args.pool == "auto" else args.pool)
        if self.pool == "cls" and not self.prefix:
            raise LocktuneError(f"{what} has no class token; use model.image_pool=mean or auto")
        self.output_dim = int(options.get("output_dim", 0)) or probe_dim(self, self.native.image_size)

    @staticmethod
    def _build(timm, name: str, what: str, overlay: dict, model_args: dict, dynamic):
        """The architecture with random weights (`u`, and a saved model before its weights are filled)."""
        kwargs = dict(model_args, pretrained=False, num_classes=0)
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        return create_model(timm, name, what, dynamic, **kwargs)

    def _load(self, timm, name: str, what: str, overlay: dict, model_args: dict):
        """Build with the checkpoint's classifier size so timm loads strictly, then drop the classifier."""
        cfg = {**_pretrained_cfg(timm, name, what), **overlay}
        try:
            classes = _head_classes(_checkpoint_shapes(self.weights_file), cfg)
        except Exception as error:
            raise LocktuneError(f"{what}: cannot read '{self.weights_file}' ({first_line(error)})") from None
        default = cfg.get("num_classes")
        attempts = [classes] if classes is not None else []
        if not classes and isinstance(default, int) and default > 0 and default not in attempts:
            attempts.append(default)  # a checkpoint whose classifier timm's filter renames (original releases)
        attempts = attempts or [0]
        load_overlay = dict(overlay, file=str(self.weights_file))
        load_overlay["custom_load"] = bool(cfg.get("custom_load")) and self.weights_file.suffix == ".npz"
        first_error = None
        for classes in attempts:
            try:
                model, dynamic = create_model(timm, name, what, None, pretrained=True, num_classes=classes,
                                              pretrained_cfg_overlay=dict(load_overlay, num_classes=classes),
                                              **model_args)
            except LocktuneError as error:
                first_error = first_error or error
                continue
            if classes:
                model.reset_classifier(0)
            model.pretrained_cfg.pop("file", None)  # a path on this machine: not part of the architecture
            return model, dynamic
        raise LocktuneError(f"{first_error} (is '{self.weights_file}' a checkpoint of timm's '{name}'?)") from None

    def preprocess(self, image_size: int = 0) -> Preprocess:
        return checked_preprocess(self, image_size)

    def weights_fingerprint(self) -> str:
        return file_sha256(self.weights_file)[:16] if self.pretrained and self.weights_file else "random"

    def cache_identity(self) -> dict:
        if self.saved_identity is not None:
            return dict(self.saved_identity)
        return {"tower": self.name, "weights": self.weights_fingerprint(), "pool": self.pool}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.pool == "pooler":
            return self.model(pixels)
        features = self.model.forward_features(pixels)
        if self.pool == "cls":
            return features[:, 0]
        if features.ndim == 3:
            return features[:, self.prefix:].mean(1)
        return features.mean(dim=(1, 2) if self.channels_last else (2, 3))

    def save_architecture(self, folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        options = {"pool": self.pool, "output_dim": self.output_dim, "preprocess": self.native.describe(),
                   "dynamic": self.dynamic, "pretrained_cfg": self.overlay, "model_args": self.model_args}
        (folder / SAVED_OPTIONS).write_text(json.dumps(options, indent=1, default=list))
        return options


IMAGE_TOWER_KINDS.register("timm")(TimmTower)
