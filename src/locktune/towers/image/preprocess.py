"""Image preprocessing: any PIL image -> a normalised tensor for an image tower.

Transparent images are composited on white (clip art and stamps are drawn on transparency).  Then one of
three resize modes, so a tower pretrained with its own recipe gets exactly that recipe:

    pad_square     pad to a square with white, so nothing is cropped away, then resize (the bundled towers);
                   an image over MAX_PAD_SIDE on its long side is first box-reduced by a whole factor
    shortest_edge  resize the shorter side to `resize_to`, then centre-crop `image_size` (CLIP, ConvNeXt, timm)
    stretch        resize straight to `image_size` x `image_size`, aspect ratio not kept (ViT, SigLIP)

`describe()` is part of the embedding cache's key and of every saved model: change any step and the cache
is recomputed; `from_description()` rebuilds the identical transform in another process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from locktune.data.decode import on_background, to_8bit
from locktune.errors import LocktuneError

PREPROCESS_VERSION = 1
# pad_square never builds a square larger than this many pixels on a side (4096^2 RGB: 48 MiB).
MAX_PAD_SIDE = 4096
RESIZE_MODES = ("pad_square", "shortest_edge", "stretch")
RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
            "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    background: tuple[int, int, int] = (255, 255, 255)
    resize: str = "pad_square"
    resample: str = "bicubic"
    resize_to: int = 0  # shortest_edge only: the shorter side before the centre crop (0: image_size)
    # shortest_edge only: the crop offset (long - size) / 2 floored, as transformers does, or rounded half to
    # even, as torchvision's CenterCrop (timm, open_clip) does; they differ by a pixel when long - size = 3 mod 4.
    crop_round: str = "floor"

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise LocktuneError(f"preprocessing resize mode '{self.resize}' is not one of {', '.join(RESIZE_MODES)}")
        if self.crop_round not in ("floor", "half_even"):
            raise LocktuneError(f"preprocessing crop_round '{self.crop_round}' is not floor or half_even")
        if self.resample not in RESAMPLE:
            raise LocktuneError(f"preprocessing resample '{self.resample}' is not one of {', '.join(RESAMPLE)}")
        if self.image_size < 1:
            raise LocktuneError(f"preprocessing image size must be at least 1 pixel, got {self.image_size}")
        # Whoever built this transform (a tower, a manifest, a processor config), no image is ever resized to
        # a size that is an allocation hazard, nor divided by a std of 0 (every embedding zero or NaN).
        from locktune.towers.limits import check_normalisation, check_number

        check_number(self.image_size, "preprocessing", "image_size")
        check_number(self.resize_to, "preprocessing", "resize_to")
        check_normalisation(self.mean, self.std, "preprocessing")
        if self.resize == "shortest_edge" and self.resize_to and self.resize_to < self.image_size:
            raise LocktuneError(f"preprocessing resizes the shorter side to {self.resize_to} px, below the "
                                f"{self.image_size} px centre crop")

    def describe(self) -> dict:
        if self.resize == "pad_square" and self.resample == "bicubic":
            # The form every cache entry and saved model before other resize modes used: keys stay valid.
            return {"version": PREPROCESS_VERSION, "pad_to_square": True, "resample": "bicubic",
                    "image_size": self.image_size, "mean": self.mean, "std": self.std, "background": self.background}
        return {"version": PREPROCESS_VERSION, "pad_to_square": self.resize == "pad_square", **asdict(self)}

    @classmethod
    def from_description(cls, description: dict) -> "Preprocess":
        """The transform `describe()` wrote (a saved model's manifest, a cache's manifest)."""
        if description.get("version") != PREPROCESS_VERSION:
            raise LocktuneError(f"preprocessing description version {description.get('version')!r} is not "
                                f"{PREPROCESS_VERSION}; re-export the model with this locktune")
        fields = {k: v for k, v in description.items() if k not in ("version", "pad_to_square")}
        for key in ("mean", "std", "background"):
            if key in fields:
                fields[key] = tuple(fields[key])
        try:
            return cls(**fields)
        except TypeError as error:
            raise LocktuneError(f"preprocessing description has fields this locktune does not know: {error}")

    def to_rgb(self, image: Image.Image) -> Image.Image:
        return on_background(image, self.background)

    def _resized(self, image: Image.Image) -> Image.Image:
        size, resample = self.image_size, RESAMPLE[self.resample]
        w, h = image.size
        if self.resize == "stretch":
            return image.resize((size, size), resample)
        if self.resize == "shortest_edge":
            short = self.resize_to or size
            # As transformers and torchvision size it: the long side truncated, not rounded.
            long = int(short * max(w, h) / min(w, h))
            new_w, new_h = (short, long) if w <= h else (long, short)
            image = image.resize((new_w, new_h), resample)
            if self.crop_round == "half_even":
                left, top = int(round((new_w - size) / 2)), int(round((new_h - size) / 2))
            else:
                left, top = (new_w - size) // 2, (new_h - size) // 2
            return image.crop((left, top, left + size, top + size))
        side = max(w, h)
        if side > MAX_PAD_SIDE:
            # Padding first would allocate side x side (a 1 x 20,000 strip: 1.2 GB); a box reduction
            # by a whole factor first bounds that, and changes nothing for images up to MAX_PAD_SIDE.
            image = image.reduce(-(-side // MAX_PAD_SIDE))
            w, h = image.size
            side = max(w, h)
        if w != h:
            square = Image.new("RGB", (side, side), self.background)
            square.paste(image, ((side - w) // 2, (side - h) // 2))
            image = square
        return image.resize((size, size), resample)

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The resized RGB image as uint8 [image_size, image_size, 3]: everything before normalisation (what
        the decode-once pixel cache stores, `cache/pixel_cache.py`)."""
        image = self._resized(self.to_rgb(to_8bit(image)))  # 16-bit and float scaled to 8 bit, not clipped
        return np.asarray(image, dtype=np.uint8)

    def normalize(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> the normalised float tensor [3, H, W]; `normalize(pixels(image))` is `self(image)`
        bit for bit."""
        array = np.asarray(pixels, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def pixel_identity(self) -> dict:
        """What decides `pixels()` (the description without mean and std, which only `normalize` uses)."""
        return {k: v for k, v in self.describe().items() if k not in ("mean", "std")}

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.pixels(image))


def preprocess_for(tower, image_size: int) -> Preprocess:
    """The tower's own preprocessing at `image_size` pixels (0: the size the tower was pretrained at)."""
    return tower.preprocess(image_size)
