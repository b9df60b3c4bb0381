"""What every image tower provides: pixels in, one pooled feature vector per image out (and, for the towers
that have them, the token outputs before pooling: `tokens()`, read by `blocks:N` heads).

Towers are named two ways: a bundled name (`efficientnet_lite0`), or `KIND:SPEC` for a model the user
brings (`hf:facebook/dinov2-small`, `timm:vit_small_patch16_224`, `open_clip:ViT-B-32@laion2b_s34b_b79k`).
Both resolve here, through registries: adding a tower or a kind is adding one file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from locktune.errors import LocktuneError
from locktune.registry import Registry
from locktune.towers.kinds import check_tower_name, split_kind
from locktune.towers.image.preprocess import Preprocess

# cls+mean: the class token beside the mean of the patch tokens (dino.txt), twice the hidden width; hf: only.
IMAGE_POOLS = ("auto", "cls", "mean", "pooler", "cls+mean")
NATIVE_SIZE = 224  # the bundled towers' pretraining resolution


class ImageTower(nn.Module):
    """Subclasses set `output_dim`, `mean`/`std` (input normalisation) and `weights_file` (or None);
    towers with a recipe of their own override `preprocess`."""

    name: str = "image_tower"
    output_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_file: Path | None = None
    pretrained: bool = False
    # Set when a saved model is loaded: the identity of the weights it started from, so a locked tower
    # loaded from a saved folder reuses the embedding cache its training filled.
    saved_identity: dict | None = None
    # Whether token 0 of `tokens()` is a class token (a `blocks:N` head prepends a learned one where not).
    has_cls_token: bool = False

    @property
    def token_dim(self) -> int:
        """The width of each token `tokens()` gives (the pooled width for towers that pool by a mean)."""
        return self.output_dim

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The tower's last token outputs [b, T, token_dim], before any pooling: what a `blocks:N` head reads."""
        raise LocktuneError(f"image tower '{self.name}' gives no token outputs; a blocks:N image head reads tokens "
                            "from hf: ViT-family towers, efficientnet_lite0 or mobilenet_v2")

    def preprocess(self, image_size: int = 0) -> Preprocess:
        """The input transform at `image_size` pixels (0: the tower's own pretraining size)."""
        return Preprocess(image_size=image_size or NATIVE_SIZE, mean=tuple(self.mean), std=tuple(self.std))

    def weights_fingerprint(self) -> str:
        """Identifies the starting weights: the weight file's sha256, or 'random' for a from-scratch tower."""
        if not self.pretrained or self.weights_file is None:
            return "random"
        return file_sha256(self.weights_file)[:16]

    def cache_identity(self) -> dict:
        """What the embedding cache keys a tower by: its name and starting weights (kinds add more)."""
        if self.saved_identity is not None:
            return dict(self.saved_identity)
        return {"tower": self.name, "weights": self.weights_fingerprint()}

    def save_architecture(self, folder: Path) -> dict:
        """Write what rebuilds this architecture offline into `folder` (weights are saved elsewhere);
        returns options for the manifest.  Bundled towers rebuild from their name alone."""
        return {}


_sha_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a big checkpoint is read once per process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _sha_memo:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _sha_memo[key] = digest.hexdigest()
    return _sha_memo[key]


@dataclass
class ImageTowerArgs:
    """What a `KIND:SPEC` tower builder gets.  `saved`: a saved model's tower folder to rebuild the
    architecture from (no weights read, no network), instead of resolving `spec`."""

    pretrained: bool
    pool: str = "auto"
    saved: Path | None = None


IMAGE_TOWERS: Registry[Callable[[bool], ImageTower]] = Registry("image tower")
IMAGE_TOWER_KINDS: Registry[Callable[[str, ImageTowerArgs], ImageTower]] = Registry("image tower kind")


def check_image_tower_name(name: str) -> None:
    check_tower_name(name, "image", IMAGE_TOWERS, IMAGE_TOWER_KINDS, "hf:facebook/dinov2-small")


def build_image_tower(name: str, pretrained: bool, pool: str = "auto", saved: Path | None = None) -> ImageTower:
    """A bundled tower by name, or a `KIND:SPEC` tower (pretrained weights, or the same architecture
    randomly initialised).  `saved` rebuilds a saved model's architecture from its folder."""
    check_image_tower_name(name)
    kind, spec = split_kind(name)
    if kind is None:
        if pool not in ("auto", "mean"):
            raise LocktuneError(f"model.image_pool '{pool}' does not apply to the bundled tower '{name}' (it "
                                "mean-pools its last feature map); use auto")
        return IMAGE_TOWERS.get(name)(pretrained)
    if pool not in IMAGE_POOLS:
        raise LocktuneError(f"model.image_pool '{pool}' is not one of {', '.join(IMAGE_POOLS)}")
    if pool == "cls+mean" and kind != "hf":
        raise LocktuneError(f"model.image_pool 'cls+mean' is for hf: ViT-family towers, not '{name}'; use cls or mean")
    return IMAGE_TOWER_KINDS.get(kind)(spec, ImageTowerArgs(pretrained=pretrained, pool=pool, saved=saved))


def token_shape(tower, preprocess: Preprocess) -> tuple[int, int]:
    """(T, D) of the tower's tokens at this preprocessing (what a blocks:N head reads and the token cache
    stores): one forward pass over a blank image, on the tower's device, in eval mode (restored after)."""
    size = preprocess.image_size
    device = next(iter(tower.parameters()), torch.zeros(())).device
    was_training = tower.training
    tower.eval()
    with torch.no_grad():
        out = tower.tokens(torch.zeros(1, 3, size, size, device=device))
    tower.train(was_training)
    return int(out.shape[1]), int(out.shape[2])
