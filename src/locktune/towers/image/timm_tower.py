"""`timm:NAME` and `timm:NAME@FILE_OR_HUB_ID` image towers (optional extra: pip install 'locktune[timm]').

Weights come from FILE, or from the hub repo (the model's default one when none is named) in the local
Hugging Face cache; never downloaded unless the user allows it (`towers/hub.py`).  Preprocessing is
timm's pretrained data config: resize the shorter side to size / crop_pct, centre-crop size, normalise.
Pooling: `auto`/`pooler` is timm's own head pooling (num_classes=0); `cls` and `mean` pool the token
or feature map output of `forward_features` (prefix tokens left out of the mean).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from locktune.errors import LocktuneError
from locktune.towers.hub import read_json, resolve_model, weight_files
from locktune.towers.image.base import IMAGE_TOWER_KINDS, ImageTower, ImageTowerArgs, file_sha256
from locktune.towers.image.preprocess import Preprocess
from locktune.towers.image.hf_processor import scaled

SAVED_OPTIONS = "locktune_tower.json"
TORCHVISION_NOTE = ("(timm needs torchvision, and PyPI's torchvision does not import beside a CPU-only torch "
                    "build; install matching torch and torchvision builds)")


def import_extra(module: str, extra: str, what: str):
    """Import an optional package, or one line naming the extra that installs it."""
    try:
        return __import__(module)
    except ImportError as error:
        raise LocktuneError(f"{what} needs the package '{module}', which is not installed: pip install "
                            f"'locktune[{extra}]' ({error})") from None
    except (RuntimeError, OSError, AttributeError) as error:  # torchvision's compiled operators failing to load
        raise LocktuneError(f"{what}: '{module}' is installed but does not import "
                            f"({str(error).splitlines()[0][:160]}) {TORCHVISION_NOTE}") from None


def _weights_file(name: str, source: str, timm, what: str) -> Path:
    """FILE, a hub repo's checkpoint in the local cache, or the model's default hub repo's."""
    if source and Path(source).expanduser().is_file():
        return Path(source).expanduser().resolve()
    repo = source
    if not repo:
        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            raise LocktuneError(f"{what}: timm has no hub repo for '{name}'; give the weights as timm:{name}@FILE")
    folder = resolve_model(repo, what).folder
    files = [p for p in weight_files(folder) if not p.name.startswith("open_clip")]
    if not files:
        raise LocktuneError(f"{what}: '{folder}' holds no weight file (model.safetensors / pytorch_model.bin)")
    return files[0]


def preprocess_from_timm(model, timm, what: str) -> Preprocess:
    config = timm.data.resolve_data_config({}, model=model)
    _, height, width = config["input_size"]
    if height != width:
        raise LocktuneError(f"{what}: input size {height}x{width} is not square; locktune feeds square images")
    mode, crop_pct = config.get("crop_mode", "center"), float(config.get("crop_pct", 1.0))
    mean, std = tuple(float(x) for x in config["mean"]), tuple(float(x) for x in config["std"])
    resample = str(config.get("interpolation", "bicubic"))
    if mode != "center" and crop_pct != 1.0:
        raise LocktuneError(f"{what}: timm crop_mode '{mode}' is not a transform locktune reproduces")
    return Preprocess(height, mean, std, resize="shortest_edge", resample=resample,
                      resize_to=math.floor(height / crop_pct))


class TimmTower(ImageTower):
    def __init__(self, spec: str, args: ImageTowerArgs):
        super().__init__()
        self.name = f"timm:{spec}"
        what = f"image tower '{self.name}'"
        timm = import_extra("timm", "timm", what)
        import timm.data  # noqa: F401

        model_name, _, source = spec.partition("@")
        self.pretrained, self.weights_file = args.pretrained, None
        options = read_json(Path(args.saved) / SAVED_OPTIONS, what) if args.saved is not None else {}
        try:
            if args.pretrained and args.saved is None:
                self.weights_file = _weights_file(model_name, source, timm, what)
                self.model = timm.create_model(model_name, pretrained=True, num_classes=0,
                                               pretrained_cfg_overlay={"file": str(self.weights_file)})
            else:
                self.model = timm.create_model(model_name, pretrained=False, num_classes=0)
        except RuntimeError as error:  # an unknown model name, a checkpoint of another architecture
            raise LocktuneError(f"{what}: {str(error).splitlines()[0][:200]}") from None
        self.native = (Preprocess.from_description(options["preprocess"]) if "preprocess" in options
                       else preprocess_from_timm(self.model, timm, what))
        self.prefix = int(getattr(self.model, "num_prefix_tokens", 0))
        self.pool = options.get("pool") or ("pooler" if args.pool == "auto" else args.pool)
        if self.pool == "cls" and not self.prefix:
            raise LocktuneError(f"{what} has no class token; use model.image_pool=mean or auto")
        self.output_dim = int(options.get("output_dim", 0)) or self._probe_dim()

    def _probe_dim(self) -> int:
        was = self.training
        self.eval()
        with torch.no_grad():
            dim = int(self(torch.zeros(1, 3, self.native.image_size, self.native.image_size)).shape[-1])
        self.train(was)
        return dim

    def preprocess(self, image_size: int = 0) -> Preprocess:
        return scaled(self.native, image_size)

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
        return features[:, self.prefix:].mean(1) if features.ndim == 3 else features.mean(dim=(2, 3))

    def save_architecture(self, folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        options = {"pool": self.pool, "output_dim": self.output_dim, "preprocess": self.native.describe()}
        (folder / SAVED_OPTIONS).write_text(json.dumps(options, indent=1))
        return options


IMAGE_TOWER_KINDS.register("timm")(TimmTower)
