"""`open_clip:ARCH@PRETRAINED` image towers: the image half of an open_clip model (optional extra:
pip install 'locktune[open_clip]').

PRETRAINED is a checkpoint file, or an open_clip tag (`laion2b_s34b_b79k`) whose hub repo is read from
the local Hugging Face cache (never downloaded unless the user allows it).  The tower's output is
open_clip's image embedding (after its own projection); preprocessing is the model's preprocess config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from locktune.errors import LocktuneError
from locktune.towers.hub import read_json, resolve_model
from locktune.towers.image.base import IMAGE_TOWER_KINDS, ImageTower, ImageTowerArgs, file_sha256
from locktune.towers.image.hf_processor import scaled
from locktune.towers.image.preprocess import Preprocess
from locktune.towers.image.timm_tower import import_extra

SAVED_OPTIONS = "locktune_tower.json"
RESIZE_MODES = {"shortest": "shortest_edge", "squash": "stretch", "longest": "pad_square"}


def _checkpoint(arch: str, tag: str, open_clip, what: str) -> Path:
    if Path(tag).expanduser().is_file():
        return Path(tag).expanduser().resolve()
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    # open_clip writes 'org/repo/' or 'org/repo/FILENAME'
    repo, filename = os.path.split(str(cfg.get("hf_hub", "")))
    if not repo:
        raise LocktuneError(f"{what}: open_clip knows no hub checkpoint '{tag}' for '{arch}' (see "
                            "open_clip.list_pretrained()); or give a checkpoint file: open_clip:ARCH@FILE")
    folder = resolve_model(repo, what).folder
    for name in ([filename] if filename else []) + ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
        if (folder / name).is_file():
            return folder / name
    raise LocktuneError(f"{what}: '{folder}' holds no open_clip checkpoint (open_clip_model.safetensors)")


def preprocess_from_open_clip(visual, what: str) -> Preprocess:
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else size
    mode = RESIZE_MODES.get(cfg.get("resize_mode", "shortest"))
    if mode is None:
        raise LocktuneError(f"{what}: open_clip resize_mode '{cfg.get('resize_mode')}' is not one locktune reproduces")
    fill = int(cfg.get("fill_color", 0))
    background = (fill, fill, fill) if mode == "pad_square" else (255, 255, 255)
    return Preprocess(int(size), tuple(float(x) for x in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                      tuple(float(x) for x in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
                      background=background, resize=mode, resample=str(cfg.get("interpolation", "bicubic")),
                      resize_to=int(size) if mode == "shortest_edge" else 0)


class OpenClipTower(ImageTower):
    def __init__(self, spec: str, args: ImageTowerArgs):
        super().__init__()
        self.name = f"open_clip:{spec}"
        what = f"image tower '{self.name}'"
        open_clip = import_extra("open_clip", "open_clip", what)
        arch, _, tag = spec.partition("@")
        self.pretrained, self.weights_file = args.pretrained, None
        options = read_json(Path(args.saved) / SAVED_OPTIONS, what) if args.saved is not None else {}
        if args.pool not in ("auto", "pooler"):
            raise LocktuneError(f"{what}: open_clip towers output their own pooled, projected embedding; "
                                "model.image_pool must be auto")
        try:
            if args.pretrained and args.saved is None:
                if not tag:
                    raise LocktuneError(f"{what} names no weights; write open_clip:{arch}@TAG or open_clip:{arch}@FILE")
                self.weights_file = _checkpoint(arch, tag, open_clip, what)
                model = open_clip.create_model(arch, pretrained=str(self.weights_file))
            else:
                model = open_clip.create_model(arch, pretrained=None)
        except RuntimeError as error:
            raise LocktuneError(f"{what}: {str(error).splitlines()[0][:200]}") from None
        self.visual = model.visual
        del model  # the text half is not needed
        self.native = (Preprocess.from_description(options["preprocess"]) if "preprocess" in options
                       else preprocess_from_open_clip(self.visual, what))
        self.pool = "pooler"
        self.output_dim = int(getattr(self.visual, "output_dim", 0) or options.get("output_dim", 0))

    def preprocess(self, image_size: int = 0) -> Preprocess:
        return scaled(self.native, image_size)

    def weights_fingerprint(self) -> str:
        return file_sha256(self.weights_file)[:16] if self.pretrained and self.weights_file else "random"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def save_architecture(self, folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        options = {"output_dim": self.output_dim, "preprocess": self.native.describe()}
        (folder / SAVED_OPTIONS).write_text(json.dumps(options, indent=1))
        return options


IMAGE_TOWER_KINDS.register("open_clip")(OpenClipTower)
