"""What every image tower provides: pixels in, one pooled feature vector per image out."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from torch import nn

from locktune.registry import Registry


class ImageTower(nn.Module):
    """Subclasses set `output_dim`, `mean`/`std` (input normalisation) and `weights_file` (or None)."""

    name: str = "image_tower"
    output_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_file: Path | None = None
    pretrained: bool = False

    def weights_fingerprint(self) -> str:
        """Identifies the starting weights: the weight file's sha256, or 'random' for a from-scratch tower."""
        if not self.pretrained or self.weights_file is None:
            return "random"
        digest = hashlib.sha256()
        with open(self.weights_file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]


IMAGE_TOWERS: Registry[Callable[[bool], ImageTower]] = Registry("image tower")


def build_image_tower(name: str, pretrained: bool) -> ImageTower:
    return IMAGE_TOWERS.get(name)(pretrained)
