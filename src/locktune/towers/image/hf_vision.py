"""`hf:ID_OR_FOLDER` image towers: any transformers vision backbone that AutoModel loads.

ViT, DeiT, BEiT, DINOv2, Swin, ConvNeXt, ResNet..., and the vision half of a CLIP / SigLIP checkpoint.
The pooled vector is chosen by `model.image_pool`:

    auto    the model's own pooled output where it has trained weights for one, else the class token
            for ViT-like models, else the mean over patch tokens / the spatial mean
    cls     the class token (models that have one)
    mean    the mean over patch tokens (class, distillation and register tokens left out) or positions
    pooler  the model's pooled output (ViT's tanh pooler, CLIP's post-norm class token, SigLIP's head)
    cls+mean  the class token concatenated with the mean over patch tokens (dino.txt): twice the hidden width

`tokens()` (what a `blocks:N` head reads) is the last hidden state: the class token first where the model has
one, then the patch tokens; distillation and register tokens are dropped (they are neither, and dino.txt's
heads read the class and patch tokens only).  A model whose last hidden state is a feature map gives its
H*W positions as tokens.

Preprocessing comes from the folder's image-processor config (`hf_processor.py`).  `u` builds the same
architecture from its config with random weights.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import torch

from locktune.errors import LocktuneError
from locktune.towers.hub import (check_weight_files, folder_fingerprint, read_json, require_config, resolve_model,
                                 weight_files)
from locktune.towers.hf_common import (build_random, freeze_unused, from_pretrained, hf_quiet, load_config, model_class,
                                      plain_mode_switch, probing)
from locktune.towers.image.base import IMAGE_TOWER_KINDS, ImageTower, ImageTowerArgs
from locktune.towers.image.hf_processor import PROCESSOR_FILE, preprocess_from_processor, scaled
from locktune.towers.image.preprocess import Preprocess
from locktune.towers.limits import check_patch_tokens

SAVED_OPTIONS = "locktune_tower.json"


def _checkpoint_keys(folder: Path) -> set[str] | None:
    """Parameter names stored in the folder's safetensors checkpoint (None when they cannot be listed)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(read_json(index, str(folder)).get("weight_map", {}))
    files = [p for p in weight_files(folder) if p.suffix == ".safetensors"]
    if not files:
        return None
    from safetensors import safe_open

    keys: set[str] = set()
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            keys.update(f.keys())
    return keys


def _is_pooler_key(key: str) -> bool:
    """A weight of the model's own pooling (ViT's tanh pooler, SigLIP's attention-pool head)."""
    return bool({"pooler", "head"} & set(key.split(".")))


def _pooler_in_checkpoint(model: torch.nn.Module, keys: set[str] | None) -> bool:
    """True when the checkpoint holds every weight of the model's pooling layer (or it has none of its own:
    DINOv2 and CLIP pool through their trained final norm).  Decides `auto` for `u` as it does for `L`."""
    own = [k for k in model.state_dict() if _is_pooler_key(k)]
    return keys is None or all(any(c == k or c.endswith("." + k) for c in keys) for k in own)


def _embeddings(model: torch.nn.Module):
    embeddings = getattr(model, "embeddings", None)
    if embeddings is None and hasattr(model, "vision_model"):
        embeddings = getattr(model.vision_model, "embeddings", None)
    return embeddings


def _has_class_token(model: torch.nn.Module) -> bool:
    """Whether the first token is a class token (ViT, DeiT, BEiT, DINOv2, CLIP vision); SigLIP and Swin have none."""
    embeddings = _embeddings(model)
    return embeddings is not None and (getattr(embeddings, "cls_token", None) is not None
                                       or getattr(embeddings, "class_embedding", None) is not None)


def _prefix_tokens(model: torch.nn.Module) -> int:
    """Tokens before the patch tokens: class, distillation and register tokens."""
    embeddings = _embeddings(model)
    if embeddings is None:
        return 0
    count = int(_has_class_token(model))
    count += int(getattr(embeddings, "distillation_token", None) is not None)
    registers = getattr(embeddings, "register_tokens", None)
    return count + (int(registers.shape[1]) if registers is not None else 0)


class HFVisionTower(ImageTower):
    def __init__(self, spec: str, args: ImageTowerArgs):
        super().__init__()
        self.name = f"hf:{spec}"
        what = f"image tower '{self.name}'"
        if args.saved is not None:
            folder, self.revision, self.fingerprint_ = Path(args.saved), None, "random"
            options = read_json(folder / SAVED_OPTIONS, what)
        else:
            source = resolve_model(spec, what)
            folder, self.revision, options = source.folder, source.revision, {}
            require_config(folder, what)
            self.fingerprint_ = folder_fingerprint(folder) if args.pretrained else "random"
        self.pretrained = args.pretrained
        self.source_folder = folder
        config = load_config(folder, what, part="vision")
        cls = model_class(config, what, want="image")
        self.native = preprocess_from_processor(folder, what)
        # The build-time probes run at the processor's size: bound the tokens they attend over.
        check_patch_tokens(self.native.image_size, getattr(config, "patch_size", None), f"{what}: '{folder}'")
        hf_quiet()
        if args.pretrained and args.saved is None:
            self.model, has_pooler = self._load_pretrained(cls, folder, config, what)
        else:
            if args.saved is None:
                check_weight_files(folder, what)  # its safetensors header is read for the pooler's keys
            self.model = build_random(cls, config, what, folder)
            has_pooler = options["has_pooler"] if "has_pooler" in options else _pooler_in_checkpoint(
                self.model, _checkpoint_keys(folder))
        if not has_pooler and getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # untrained weights: never part of a locked tower's output
        self.has_pooler = has_pooler
        plain_mode_switch(self.model)
        self.prefix = _prefix_tokens(self.model)
        self.class_token = _has_class_token(self.model)
        self.native_size = int(getattr(config, "image_size", 0) or self.native.image_size)
        self.takes_interpolate = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters
        self.pool = self._resolve_pool(options.get("pool", args.pool), what)
        self.output_dim = int(options.get("output_dim", 0)) or self._probe_dim()
        size = self.native.image_size
        self.unused = freeze_unused(self, lambda: self(torch.zeros(1, 3, size, size)))

    def _load_pretrained(self, cls, folder: Path, config, what: str):
        model, info = from_pretrained(cls, folder, config, what)
        missing = [k for k in info.get("missing_keys", []) if not _is_pooler_key(k)]
        if missing:
            raise LocktuneError(f"{what}: '{folder}' holds no weights for {len(missing)} parameters (e.g. "
                                f"{', '.join(sorted(missing)[:3])}); it is another architecture's checkpoint")
        has_pooler = not any(_is_pooler_key(k) for k in info.get("missing_keys", []))
        return model, has_pooler

    def _outputs(self, pixels: torch.Tensor):
        kwargs = {}
        if self.takes_interpolate and pixels.shape[-1] != self.native_size:
            kwargs["interpolate_pos_encoding"] = True
        return self.model(pixel_values=pixels, **kwargs)

    def _resolve_pool(self, pool: str, what: str) -> str:
        with torch.no_grad(), probing(self.model):
            out = self._outputs(torch.zeros(1, 3, self.native.image_size, self.native.image_size))
        pooled = getattr(out, "pooler_output", None) if self.has_pooler else None
        sequence = out.last_hidden_state.ndim == 3
        self.has_cls_token = sequence and self.class_token  # token 0 of `tokens()`
        self._token_dim = int(out.last_hidden_state.shape[-1 if sequence else 1])
        if pool == "auto":
            # A trained pooled output first: what the model itself embeds an image as (ViT's pooler, DINOv2's
            # normed class token, CLIP/SigLIP's head), and the one pooling transformers' dual encoder exports.
            self.pool_reason = ("auto: the model's own trained pooled output" if pooled is not None else
                                "auto: no trained pooled output; the class token" if sequence and self.prefix else
                                "auto: no trained pooled output and no class token")
            return "pooler" if pooled is not None else "cls" if sequence and self.prefix else "mean"
        self.pool_reason = "model.image_pool"
        if pool == "pooler" and pooled is None:
            raise LocktuneError(f"{what} has no pooled output with trained weights; use model.image_pool=cls or mean")
        if pool == "cls" and not (sequence and self.prefix):
            raise LocktuneError(f"{what} has no class token; use model.image_pool=mean (or pooler where it has one)")
        if pool == "cls+mean" and not self.has_cls_token:
            raise LocktuneError(f"{what} has no class token, so no cls+mean; use model.image_pool=mean (or pooler "
                                "where it has one)")
        return pool

    def _probe_dim(self) -> int:
        with torch.no_grad(), probing(self):
            return int(self(torch.zeros(1, 3, self.native.image_size, self.native.image_size)).shape[-1])

    def preprocess(self, image_size: int = 0) -> Preprocess:
        return scaled(self.native, image_size)

    @property
    def token_dim(self) -> int:
        return self._token_dim

    def weights_fingerprint(self) -> str:
        return self.fingerprint_

    def cache_identity(self) -> dict:
        if self.saved_identity is not None:
            return dict(self.saved_identity)
        # The pooled vector is what the cache stores: another pooling is another entry.
        return {"tower": self.name, "weights": self.weights_fingerprint(), "revision": self.revision,
                "pool": self.pool}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._outputs(pixels)
        if self.pool == "pooler":
            return out.pooler_output.flatten(1)
        hidden = out.last_hidden_state
        if self.pool == "cls":
            return hidden[:, 0]
        if self.pool == "cls+mean":
            return torch.cat([hidden[:, 0], hidden[:, self.prefix:].mean(1)], dim=-1)
        return hidden[:, self.prefix:].mean(1) if hidden.ndim == 3 else hidden.mean(dim=(2, 3))

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self._outputs(pixels).last_hidden_state
        if hidden.ndim == 4:  # a feature map [b, C, H, W]: its positions, row by row
            return hidden.flatten(2).transpose(1, 2)
        patches = hidden[:, self.prefix:]
        return torch.cat([hidden[:, :1], patches], dim=1) if self.has_cls_token else patches

    def save_architecture(self, folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(folder)
        shutil.copyfile(self.source_folder / PROCESSOR_FILE, folder / PROCESSOR_FILE)
        options = {"pool": self.pool, "has_pooler": self.has_pooler, "output_dim": self.output_dim}
        (folder / SAVED_OPTIONS).write_text(__import__("json").dumps(options, indent=1))
        return options


IMAGE_TOWER_KINDS.register("hf")(HFVisionTower)
