"""`open_clip:ARCH@PRETRAINED` image towers: the image half of an open_clip model (optional extra:
pip install 'locktune[open_clip]').

PRETRAINED is a checkpoint file, or an open_clip tag (`laion2b_s34b_b79k`) whose hub repo is read from
the local Hugging Face cache (never downloaded unless the user allows it).  A tag also brings what open_clip
pairs with it: its preprocessing (SigLIP's squash and 0.5 mean/std, MobileCLIP's bilinear without
normalisation...) and QuickGELU where the weights were trained with it; `u` reads the same tag config
(offline), so both letters build the same architecture and preprocessing.  A file brings the architecture's
defaults, as `open_clip.create_model(ARCH, pretrained=FILE)` does.

The tower's output is open_clip's image embedding (after its own projection); preprocessing is the model's
preprocess config, as open_clip's evaluation transform applies it (`shortest`: shorter side to size, centre
crop; `squash`: stretch to size x size).  `longest` (resize, then pad) is refused rather than approximated.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from locktune.errors import LocktuneError
from locktune.towers.hub import WEIGHT_SUFFIXES, read_json, resolve_model
from locktune.towers.image.base import IMAGE_TOWER_KINDS, ImageTower, ImageTowerArgs, file_sha256
from locktune.towers.image.preprocess import Preprocess
from locktune.towers.image.optional import checked_preprocess, first_line, import_extra, probe_dim, split_spec

SAVED_OPTIONS = "locktune_tower.json"
RESIZE_MODES = {"shortest": "shortest_edge", "squash": "stretch"}
PREPROCESS_KEYS = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _checkpoint(arch: str, tag: str, tag_cfg: dict, what: str) -> Path:
    if Path(tag).expanduser().is_file():
        return Path(tag).expanduser().resolve()
    # open_clip writes 'org/repo/' or 'org/repo/FILENAME'
    repo, filename = os.path.split(str(tag_cfg.get("hf_hub", "")).strip())
    if not repo:
        raise LocktuneError(f"{what}: '{tag}' is neither a checkpoint file nor an open_clip tag with a hub checkpoint "
                            f"for '{arch}' (see open_clip.list_pretrained()); give a file: open_clip:{arch}@FILE")
    folder = resolve_model(repo, what).folder
    for name in ([filename] if filename else []) + ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
        if (folder / name).is_file():
            return folder / name
    raise LocktuneError(f"{what}: '{folder}' holds no open_clip checkpoint (open_clip_model.safetensors)")


def _looks_like_path(tag: str) -> bool:
    return os.sep in tag or "/" in tag or Path(tag).suffix in WEIGHT_SUFFIXES


def _rgb(value, default) -> tuple[float, float, float]:
    value = default if value is None else value
    value = tuple(value) if isinstance(value, (list, tuple)) else (value,) * 3
    return tuple(float(x) for x in value)


def preprocess_from_open_clip(cfg: dict, what: str) -> Preprocess:
    """open_clip's evaluation transform (`image_transform_v2(cfg, is_train=False)`) as a locktune Preprocess."""
    size = cfg.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise LocktuneError(f"{what}: input size {size} is not square; locktune feeds square images")
        size = size[0]
    resize_mode = cfg.get("resize_mode") or "shortest"
    mode = RESIZE_MODES.get(resize_mode)
    if mode is None:
        raise LocktuneError(f"{what}: open_clip resize_mode '{resize_mode}' is not a transform locktune reproduces "
                            "(it does shortest and squash)")
    # open_clip's eval transform: bilinear when asked, bicubic for anything else ('random' included)
    resample = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
    return Preprocess(int(size), _rgb(cfg.get("mean"), OPENAI_MEAN), _rgb(cfg.get("std"), OPENAI_STD),
                      resize=mode, resample=resample, resize_to=int(size) if mode == "shortest_edge" else 0,
                      crop_round="half_even")  # torchvision's CenterCrop


@contextmanager
def _quiet(enabled: bool):
    """open_clip logs a warning on the root logger for every randomly initialised model: expected for `u` and
    for a saved model (its weights are filled next), so it is not shown then."""
    previous = logging.root.manager.disable
    if enabled:
        logging.disable(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(previous)


class OpenClipTower(ImageTower):
    def __init__(self, spec: str, args: ImageTowerArgs):
        super().__init__()
        self.name = f"open_clip:{spec}"
        what, arch, tag = split_spec("open_clip", spec, "open_clip:ARCH@TAG (read from the local Hugging Face "
                                     "cache) or open_clip:ARCH@FILE, with ARCH one of open_clip.list_models()")
        if args.pool not in ("auto", "pooler"):
            raise LocktuneError(f"{what}: open_clip towers output their own pooled, projected embedding; "
                                "model.image_pool must be auto")
        open_clip = import_extra("open_clip", "open-clip", what)
        self.pretrained, self.weights_file = args.pretrained, None
        if args.saved is not None:
            options = read_json(Path(args.saved) / SAVED_OPTIONS, what)
            quick_gelu, force_preprocess = bool(options.get("quick_gelu")), {}
        else:
            options = {}
            if open_clip.get_model_config(arch) is None:
                raise LocktuneError(f"{what}: open_clip has no architecture '{arch}' (see open_clip.list_models())")
            tag_cfg = dict(open_clip.get_pretrained_cfg(arch, tag) or {}) if tag else {}
            is_file = bool(tag) and Path(tag).expanduser().is_file()
            # `u` reads no weights: a checkpoint path that is not on this machine still names the architecture
            if tag and not tag_cfg and not is_file and (args.pretrained or not _looks_like_path(tag)):
                raise LocktuneError(f"{what}: '{tag}' is neither a checkpoint file nor an open_clip tag for '{arch}' "
                                    f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'})")
            if args.pretrained:
                if not tag:
                    raise LocktuneError(f"{what} names no weights; write open_clip:{arch}@TAG or open_clip:{arch}@FILE")
                self.weights_file = _checkpoint(arch, tag, tag_cfg, what)
            # What the tag's weights were trained with, whichever file holds them (open_clip itself only warns
            # when a QuickGELU checkpoint meets an architecture without it).
            quick_gelu = bool(tag_cfg.get("quick_gelu"))
            force_preprocess = {k: tag_cfg[k] for k in PREPROCESS_KEYS if tag_cfg.get(k) is not None}
        kwargs = {"force_quick_gelu": True} if quick_gelu else {}
        try:
            with _quiet(self.weights_file is None):
                model = open_clip.create_model(arch, pretrained=str(self.weights_file) if self.weights_file else None,
                                               force_preprocess_cfg=force_preprocess or None,
                                               pretrained_hf=False,  # a Hugging Face text tower: never fetched
                                               **kwargs)
        except LocktuneError:
            raise
        except Exception as error:  # a checkpoint of another architecture, a damaged file
            hint = f" (is '{self.weights_file}' a checkpoint of open_clip's '{arch}'?)" if self.weights_file else ""
            raise LocktuneError(f"{what}: {first_line(error)}{hint}") from None
        self.quick_gelu = quick_gelu
        self.visual = model.visual
        del model  # the text half is not needed
        self.native = (Preprocess.from_description(options["preprocess"]) if "preprocess" in options
                       else preprocess_from_open_clip(dict(getattr(self.visual, "preprocess_cfg", {}) or {}), what))
        self.pool = "pooler"
        self.output_dim = int(options.get("output_dim", 0)) or probe_dim(self, self.native.image_size)

    def preprocess(self, image_size: int = 0) -> Preprocess:
        return checked_preprocess(self, image_size)

    def weights_fingerprint(self) -> str:
        return file_sha256(self.weights_file)[:16] if self.pretrained and self.weights_file else "random"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def save_architecture(self, folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        options = {"output_dim": self.output_dim, "preprocess": self.native.describe(), "quick_gelu": self.quick_gelu}
        (folder / SAVED_OPTIONS).write_text(json.dumps(options, indent=1))
        return options


IMAGE_TOWER_KINDS.register("open_clip")(OpenClipTower)
