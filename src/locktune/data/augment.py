"""Augmented views for a precomputed cache: seeded random resized crops.

A view is a pure function of (image, seed), and the seed comes from the record's key and the view number,
so a resumed run, another rank or a rerun computes exactly the same views.  No flips: captions say
"left" and "right", and a mirrored image would contradict them.
"""

from __future__ import annotations

import hashlib
import math
import random

from PIL import Image

MIN_AREA, MAX_AREA = 0.5, 1.0  # share of the image a crop keeps
MIN_RATIO, MAX_RATIO = 3 / 4, 4 / 3  # crop aspect ratios


def view_seed(key: str, view: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}\0{view}".encode()).digest()[:8], "little")


def random_crop(image: Image.Image, seed: int) -> Image.Image:
    """A crop of MIN_AREA..MAX_AREA of the image at an aspect ratio in MIN_RATIO..MAX_RATIO, placed at random."""
    rng = random.Random(seed)
    width, height = image.size
    area = width * height * rng.uniform(MIN_AREA, MAX_AREA)
    ratio = math.exp(rng.uniform(math.log(MIN_RATIO), math.log(MAX_RATIO)))
    w = max(1, min(width, round(math.sqrt(area * ratio))))
    h = max(1, min(height, round(math.sqrt(area / ratio))))
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    return image.crop((left, top, left + w, top + h))
