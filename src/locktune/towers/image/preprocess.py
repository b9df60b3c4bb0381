"""Image preprocessing: any PIL image -> a normalised tensor for an image tower.

Transparent images are composited on white (clip art and stamps are drawn on transparency); the image
is padded to a square with white, so nothing is cropped away, then resized.  `describe()` is part of
the embedding cache's key: change any step and the cache is recomputed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    background: tuple[int, int, int] = (255, 255, 255)

    def describe(self) -> dict:
        return {"version": PREPROCESS_VERSION, "pad_to_square": True, "resample": "bicubic", **asdict(self)}

    def to_rgb(self, image: Image.Image) -> Image.Image:
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            canvas = Image.new("RGBA", image.size, self.background + (255,))
            image = Image.alpha_composite(canvas, image)
        return image.convert("RGB")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = self.to_rgb(image)
        w, h = image.size
        side = max(w, h)
        if w != h:
            square = Image.new("RGB", (side, side), self.background)
            square.paste(image, ((side - w) // 2, (side - h) // 2))
            image = square
        image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())


def preprocess_for(tower, image_size: int) -> Preprocess:
    return Preprocess(image_size=image_size, mean=tuple(tower.mean), std=tuple(tower.std))
