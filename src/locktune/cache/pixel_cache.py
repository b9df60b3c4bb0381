"""Decode once (`data.decode_once`): a trained image tower's training images as a uint8 pixel array.

A run that trains the image tower would otherwise decode, composite and resize every image on every step
it is drawn (PNG/SVG decoding dominates a small tower's step).  Here each image is decoded once into
`cache_root()/pixels/<key>.npy`, uint8 [N, size, size, 3] after resizing and before normalisation
(`Preprocess.pixels`), and each step reads rows of it memory-mapped and normalises them
(`Preprocess.normalize`): the same tensors bit for bit as decoding each step.

The key hashes the image set's fingerprint and count and everything that decides the pixels (size,
resize mode, resampling, background; not mean and std), so every seed and arm on the same images and
size shares an entry.  An image that cannot be decoded keeps a zero row and its error text in the
manifest; the training decoder reports it when the row is first drawn, exactly as when decoding each step.
The array and then the manifest are written to temporary names and renamed, manifest last, so a killed
build leaves no entry (only a temporary file, named with its process id).

Under torchrun the first process builds the entry while the others wait at a barrier, then all read it
(one machine, one cache folder; a very long build may meet the process group's timeout: build it first
with a single-process run).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from locktune.cache.decoded_images import DecodedImages
from locktune.data.images import ImageSet
from locktune.progress import progress
from locktune.runtime import distributed
from locktune.runtime.location import cache_root
from locktune.towers.image.preprocess import Preprocess

PIXEL_CACHE_FORMAT = 1


@dataclass
class PixelCache:
    array: np.ndarray  # uint8 [N, size, size, 3], memory-mapped
    failed: dict[int, str]  # row -> the decode error, as `f"{type(e).__name__}: {e}"`
    path: Path
    built: bool  # False when an existing entry was reused


def pixel_cache_key(images: ImageSet, preprocess: Preprocess) -> str:
    payload = json.dumps({"format": PIXEL_CACHE_FORMAT, "images": images.fingerprint(), "count": len(images),
                          "pixels": preprocess.pixel_identity()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _no_pixels() -> None:
    return None


def _as_list(batch):
    return batch


def _read(array_path: Path, manifest_path: Path, key: str, shape: tuple[int, ...]) -> PixelCache | None:
    """The entry, or None when it is missing or does not match (then it is built again)."""
    try:
        manifest = json.loads(manifest_path.read_text())
        array = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key or array.shape != shape or array.dtype != np.uint8:
        return None
    return PixelCache(array, {int(row): error for row, error in manifest["failed"]}, array_path, False)


def _build(images: ImageSet, preprocess: Preprocess, array_path: Path, manifest_path: Path, key: str,
           shape: tuple[int, ...], workers: int, desc: str) -> None:
    started = time.time()
    array_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_name(f".{array_path.name}.tmp{os.getpid()}")  # never mistaken for an entry
    failed: list[tuple[int, str]] = []
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        # Lists of decoded images (no collation): the loader only spreads decoding over `workers` processes.
        # Its own generator: building must not draw from the global RNG, or a run that builds the entry and one
        # that reuses it would see different dropout masks afterwards.
        loader = DataLoader(DecodedImages(images, preprocess.pixels, _no_pixels), batch_size=32, collate_fn=_as_list, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))
        with progress(total=len(images), desc=desc, unit="img") as bar:
            for batch in loader:
                for index, pixels, error in batch:
                    if error:
                        failed.append((index, error[:200]))
                    else:
                        array[index] = pixels
                bar.update(len(batch))
        array.flush()
        del array
        tmp.replace(array_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    manifest = {"key": key, "format": PIXEL_CACHE_FORMAT, "images": images.fingerprint(), "count": len(images),
                "pixels": preprocess.pixel_identity(), "failed": failed, "seconds": round(time.time() - started, 1)}
    tmp_manifest = manifest_path.with_name(f".{manifest_path.name}.tmp{os.getpid()}")
    tmp_manifest.write_text(json.dumps(manifest, indent=1))
    tmp_manifest.replace(manifest_path)


def pixel_cache(images: ImageSet, preprocess: Preprocess, workers: int = 1,
                desc: str = "decoding images once") -> PixelCache:
    """The entry for these images and this preprocessing, built first if there is none."""
    key = pixel_cache_key(images, preprocess)
    folder = cache_root() / "pixels"
    array_path, manifest_path = folder / f"{key}.npy", folder / f"{key}.json"
    shape = (len(images), preprocess.image_size, preprocess.image_size, 3)
    # Only the first process looks and builds; every process then meets at the barrier, whatever it would
    # have found on its own (a process that skipped the barrier because the entry appeared meanwhile would
    # leave the others waiting there while it waits in the first collective of training).
    built = False
    if distributed.is_main() and _read(array_path, manifest_path, key, shape) is None:
        _build(images, preprocess, array_path, manifest_path, key, shape, workers, desc)
        built = True
    distributed.barrier()
    entry = _read(array_path, manifest_path, key, shape)
    if entry is None:
        raise OSError(f"the pixel cache entry {array_path} could not be read back after it was written")
    entry.built = built
    return entry
