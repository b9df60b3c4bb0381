"""Near-duplicate images between image sets, by a perceptual hash: the same picture re-drawn, re-scaled,
re-coloured slightly or mirrored is found; different pictures of the same thing are not.

The hash (a DCT pHash): the image composited on white, greyscale, 32x32;
the 8x8 lowest frequencies of its 2-D DCT; one bit per coefficient, set where it is above the mean of
the 63 non-constant ones.  Two images are near-duplicates when the Hamming distance between their
64-bit hashes, or between one and the other's mirror image, is at most THRESHOLD, chosen by looking at
pairs at each distance (README, "Held-out hygiene").  Blank images (nothing drawn on white) and
undecodable ones hash to UNREADABLE and match nothing.

Hashes are cached per image set (keyed by its fingerprint) under the locktune cache: hashing every
OpenClipart PNG takes 1.5-3 minutes, a lookup afterwards milliseconds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from locktune.data.images import ImageSet
from locktune.runtime.location import cache_root
from locktune.data.decode import on_background

THRESHOLD = 8  # Hamming bits of 64; see the README for pairs checked at each distance
HASH_SIZE, SIDE = 8, 32
UNREADABLE = np.uint64(0)  # an undecodable or blank image hashes to 0 and matches nothing (see distances)
INK = 8  # grey levels below white that count as drawn
MIN_INK = 0.01  # the least drawn fraction of the 32x32 that is not blank
THUMB = 16  # side of the colour thumbnail that checks a hash match
MAX_RMS = 21.0  # grey levels over the drawn part: a hash match is a near-duplicate only this close (README)
VERSION = 5  # part of the cache file name: bump when the hash changes


class BlankImage(ValueError):
    """Nothing drawn: no hash says anything about such an image."""


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: row k = frequency k."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


_DCT = _dct_matrix(SIDE)
# Mirroring an image left-right flips the sign of every odd horizontal frequency.
_MIRROR_SIGN = np.tile(np.where(np.arange(HASH_SIZE) % 2 == 1, -1.0, 1.0), (HASH_SIZE, 1))


def _bits(low: np.ndarray) -> np.uint64:
    flat = low.ravel()
    # Against the mean of the 63 non-constant terms, not their median: a left-right symmetric drawing (a
    # t-shirt, a house) has every odd horizontal term near 0, and a median among those near-zero values
    # makes their bits coin flips (a symmetric test drawing, re-drawn at another scale, came out 14 bits
    # apart with the median and 0 with the mean, in a trial of this hash on cropped images).
    level = flat[1:].mean()
    value = 0
    for bit in flat > level:
        value = (value << 1) | int(bit)
    return np.uint64(value)


def low_frequencies(image: Image.Image) -> np.ndarray:
    """The 8x8 lowest DCT frequencies (rows: vertical) of the greyscale image on white, resized to 32x32.

    Not cropped to the drawn part: tried, and a crop makes every filled rectangle or disc (flags, squares,
    bags) hash alike whatever is drawn around it.  A near-blank image (less than MIN_INK of the 32x32 drawn,
    e.g. a tiny figure on a big canvas, or white clip art on white) raises BlankImage: its hash would match
    every other near-blank image."""
    grey = on_background(image).convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    if np.mean(pixels < 255 - INK) < MIN_INK:
        raise BlankImage()
    return (_DCT @ pixels @ _DCT.T)[:HASH_SIZE, :HASH_SIZE]


def phash(image: Image.Image) -> tuple[np.uint64, np.uint64]:
    """(hash, hash of the mirror image) of one image."""
    low = low_frequencies(image)
    return _bits(low), _bits(low * _MIRROR_SIGN)


def thumbnail(image: Image.Image) -> np.ndarray:
    """[THUMB, THUMB, 3] uint8: the image on white, in colour, for checking a hash match."""
    return np.asarray(on_background(image).resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.uint8)


def signatures(images: ImageSet, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(hashes [n, 2] uint64: each image's and its mirror's; thumbnails [n, THUMB, THUMB, 3] uint8), cached
    on disk by the set's fingerprint.  Undecodable and blank images get hash UNREADABLE."""
    path = cache_root() / "near_duplicates" / f"v{VERSION}-{images.fingerprint()}.npz"
    if path.is_file():
        with np.load(path) as cached:
            if cached["hashes"].shape == (len(images), 2):
                return cached["hashes"], cached["thumbs"]
    hashes = np.zeros((len(images), 2), dtype=np.uint64)
    thumbs = np.full((len(images), THUMB, THUMB, 3), 255, dtype=np.uint8)
    for i in range(len(images)):
        try:
            image = on_background(images.load(i))  # once: the thumbnail and the hash both start from it
            thumbs[i] = thumbnail(image)
            hashes[i] = phash(image)
        except Exception:  # noqa: BLE001  (any decoder error, or blank: matches nothing)
            hashes[i] = UNREADABLE
        if progress is not None:
            progress(i + 1, len(images))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, hashes=hashes, thumbs=thumbs)
    os.replace(tmp, path)
    return hashes, thumbs


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).astype(np.int64)


def _hamming(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[len(query), len(reference)] distances, mirror-aware; 64 where either image is unreadable."""
    plain = reference[:, 0][None, :]
    d = np.minimum(_popcount(query[:, 0:1] ^ plain), _popcount(query[:, 1:2] ^ plain))
    d[query[:, 0] == UNREADABLE] = 64
    d[:, reference[:, 0] == UNREADABLE] = 64
    return d


def distances(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash row, the smallest Hamming distance to any reference image (plain or mirrored)
    and that image's index: ([n], [n]).  Unreadable images (hash 0) get distance 64."""
    best = np.full(len(query), 64, dtype=np.int64)
    where = np.full(len(query), -1, dtype=np.int64)
    if len(reference) == 0:
        return best, where
    for start in range(0, len(query), 512):
        d = _hamming(query[start:start + 512], reference)
        best[start:start + len(d)] = d.min(axis=1)
        where[start:start + len(d)] = d.argmin(axis=1)
    return best, where


def rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference (grey levels) between thumbnails over their drawn part (pixels not
    white in either), the smaller of b and b mirrored.  Over the whole thumbnail, two thin line drawings
    would be close just for being mostly white."""
    a, b = a.astype(np.float64), b.astype(np.float64)

    def one(other: np.ndarray) -> np.ndarray:
        drawn = ((a < 255 - INK) | (other < 255 - INK)).any(axis=-1, keepdims=True)
        squared = (((a - other) ** 2) * drawn).sum(axis=(-3, -2, -1))
        count = drawn.sum(axis=(-3, -2, -1)) * a.shape[-1]
        return np.sqrt(squared / np.maximum(count, 1))

    return np.minimum(one(b), one(b[..., ::-1, :]))


def nearest(query: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray],
            threshold: int = THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query image (signatures as `signatures` returns them): among the reference images within
    `threshold` hash bits, the one whose thumbnail is closest; without any, the nearest by hash.
    Returns (hash distance, reference index, thumbnail RMS) arrays."""
    (qh, qt), (rh, rt) = query, reference
    best = np.full(len(qh), 64, dtype=np.int64)
    where = np.full(len(qh), -1, dtype=np.int64)
    colour = np.full(len(qh), np.inf)
    if len(rh) == 0:
        return best, where, colour
    for start in range(0, len(qh), 512):
        d = _hamming(qh[start:start + 512], rh)
        for row, i in enumerate(range(start, start + len(d))):
            candidates = np.flatnonzero(d[row] <= threshold)
            if len(candidates) == 0:
                candidates = np.array([int(d[row].argmin())])
            diffs = rms(qt[i][None], rt[candidates])
            k = int(diffs.argmin())
            best[i], where[i], colour[i] = d[row, candidates[k]], candidates[k], diffs[k]
    return best, where, colour


def matches(query: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray],
            threshold: int = THRESHOLD, max_rms: float = MAX_RMS) -> list[int]:
    """Indices of the query images with a near-duplicate in the reference set: a reference image within
    `threshold` hash bits whose thumbnail is within `max_rms` grey levels."""
    best, _, colour = nearest(query, reference, threshold)
    return [int(i) for i in np.flatnonzero((best <= threshold) & (colour <= max_rms))]


def pairs_within(sigs: tuple[np.ndarray, np.ndarray], threshold: int = THRESHOLD,
                 max_rms: float = MAX_RMS) -> list[tuple[int, int]]:
    """(i, j), i < j, for every two near-duplicate images of one set."""
    hashes, thumbs = sigs
    out = []
    for i in range(len(hashes) - 1):
        d = _hamming(hashes[i:i + 1], hashes[i + 1:])[0]
        candidates = np.flatnonzero(d <= threshold)
        if len(candidates):
            close = rms(thumbs[i][None], thumbs[i + 1 + candidates]) <= max_rms
            out += [(i, i + 1 + int(j)) for j in candidates[close]]
    return out
