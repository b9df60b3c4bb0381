"""Near-duplicates that are the same picture re-framed: cropped to another canvas, scaled, mirrored.

`near_duplicates` hashes the whole canvas, so a stamp drawn on a bigger or differently shaped canvas than
its training copy (Tux Paint's cartoon fruit, hats, electronics, people re-exported from OpenClipart) is
missed.  Here each image is composited on white and cut to the tight bounding box of its drawn part
(pixels darker than white by more than `near_duplicates.INK`), centred on a white square (the aspect
ratio kept), then:
- hashed: the 64-bit DCT pHash of that square at 32x32 greyscale, plus the hash of its mirror image;
- thumbnailed: 32x32 in colour, for the pixel check (RMS grey levels over the drawn part, mirror-aware),
  at two sizes: the 32x32 thumbnail and its 16x16 average (2x2 blocks).
Two images are the same picture when (hash within NEAR_BITS and 32x32 thumbnails within NEAR_RMS) or
(hash within CLOSE_BITS and 16x16 thumbnails within COARSE_RMS): a looser hash needs the fine pixels to
agree; a very close hash needs only the coarse ones, which forgive a re-render's changed line widths and
shading (a re-drawn camera, candy cane, lemon slice: 23-35 apart at 32x32, 10-16 at 16x16; the sun and
the star burst 1 bit apart: 23 at 16x16).  The limits come from every Tux Paint stamp's
closest OpenClipart image, judged by eye (the labelled pairs in `assets/near_duplicate_check_set.json`;
tests/test_near_duplicates_check_set.py measures precision and recall on them).

The cropped hash is not used alone: a crop makes every filled disc or square alike (a coin and a dotted
circle are 5 bits apart, a yen coin and the black-circle emoji 4), which is what the pixel check rejects.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from locktune.data.decode import on_background
from locktune.data.images import ImageSet
from locktune.data.near_duplicates import _DCT, _MIRROR_SIGN, HASH_SIZE, INK, SIDE, UNREADABLE, _bits, _hamming, rms

VERSION = 1  # of the signature and the limits: part of every drop list made with them
THUMB = 32
NEAR_BITS, NEAR_RMS = 7, 20.0
CLOSE_BITS, COARSE_RMS = 3, 19.0
MIN_DRAWN = 16  # pixels: fewer is blank


def framed(image: Image.Image) -> Image.Image | None:
    """The drawn part of the image on white, centred on a white square; None when nothing is drawn."""
    rgb = np.asarray(on_background(image), dtype=np.uint8)
    drawn = (rgb < 255 - INK).any(axis=-1)
    if drawn.sum() < MIN_DRAWN:
        return None
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    crop = rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = crop.shape[:2]
    side = max(height, width)
    square = np.full((side, side, 3), 255, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = crop
    return Image.fromarray(square)


def signature(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(hashes [2] uint64: the framed picture's and its mirror's, thumbnail [THUMB, THUMB, 3] uint8); a blank
    image gets UNREADABLE hashes and a white thumbnail."""
    square = framed(image)
    if square is None:
        return np.array([UNREADABLE, UNREADABLE], dtype=np.uint64), np.full((THUMB, THUMB, 3), 255, np.uint8)
    grey = np.asarray(square.convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:HASH_SIZE, :HASH_SIZE]
    thumb = np.asarray(square.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.uint8)
    return np.array([_bits(low), _bits(low * _MIRROR_SIGN)], dtype=np.uint64), thumb


def signatures(images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """(hashes [n, 2], thumbnails [n, THUMB, THUMB, 3]) of a set; undecodable images match nothing."""
    hashes = np.zeros((len(images), 2), dtype=np.uint64)
    thumbs = np.full((len(images), THUMB, THUMB, 3), 255, dtype=np.uint8)
    for i in range(len(images)):
        try:
            hashes[i], thumbs[i] = signature(images.load(i))
        except Exception:  # noqa: BLE001  (any decoder error: matches nothing)
            hashes[i] = UNREADABLE
    return hashes, thumbs


def coarse(thumbs: np.ndarray) -> np.ndarray:
    """[..., THUMB, THUMB, 3] thumbnails averaged over 2x2 blocks: [..., THUMB/2, THUMB/2, 3] float."""
    shape = thumbs.shape[:-3] + (THUMB // 2, 2, THUMB // 2, 2, 3)
    return thumbs.astype(np.float64).reshape(shape).mean(axis=(-4, -2))


def same_picture(bits: np.ndarray, fine: np.ndarray, coarse_distance: np.ndarray) -> np.ndarray:
    """The two-tier rule of the module docstring, elementwise over hash bits and the thumbnails' RMS at
    32x32 (`fine`) and at 16x16 (`coarse_distance`)."""
    bits = np.asarray(bits)
    return (((bits <= NEAR_BITS) & (np.asarray(fine) <= NEAR_RMS))
            | ((bits <= CLOSE_BITS) & (np.asarray(coarse_distance) <= COARSE_RMS)))


def matches(query: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> dict[int, int]:
    """{query index: reference index} for each query image with the same picture in the reference set (the
    closest by thumbnail among those that pass)."""
    (qh, qt), (rh, rt) = query, reference
    out: dict[int, int] = {}
    if len(rh) == 0:
        return out
    for start in range(0, len(qh), 256):
        d = _hamming(qh[start:start + 256], rh)
        for row in range(len(d)):
            candidates = np.flatnonzero(d[row] <= NEAR_BITS)
            if len(candidates) == 0:
                continue
            distance = rms(qt[start + row][None], rt[candidates])
            coarse_distance = rms(coarse(qt[start + row])[None], coarse(rt[candidates]))
            passing = same_picture(d[row, candidates], distance, coarse_distance)
            if passing.any():
                out[start + row] = int(candidates[passing][distance[passing].argmin()])
    return out
