"""The locked image tower's embeddings, computed once per (tower, weights, preprocessing, image set).

The key hashes all four, so a change to any of them computes a new entry instead of reusing stale
vectors.  An entry is a float32 .npy of pooled tower outputs plus a manifest; both are written to a
temporary name and renamed, so a killed run never leaves a half-written entry behind.
An image that cannot be read is skipped and counted (its row is NaN and `valid` is False).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from locktune.cache.decoded_images import DecodedImages
from locktune.runtime.location import cache_root
from locktune.data.decode import failure_reason
from locktune.data.images import ImageSet
from locktune.errors import LocktuneError
from locktune.progress import progress
from locktune.runtime import distributed, placement
from locktune.towers.image.preprocess import Preprocess

CACHE_FORMAT = 1


@dataclass
class CachedFeatures:
    features: torch.Tensor  # [N, D] float32; NaN rows where the image could not be read
    valid: torch.Tensor  # [N] bool
    path: Path | None
    computed: bool  # False when the entry was reused from disk
    failed: dict[str, str]  # image key -> reason


def failure_counts(failed: dict[str, str]) -> dict[str, int]:
    """reason -> images, from the decode errors `failed` holds per image key."""
    return dict(Counter(failure_reason(error) for error in failed.values()))


def cache_key(identity: dict, preprocess: Preprocess, images: ImageSet, precision: str = "fp32") -> str:
    """`identity`: the tower's `cache_identity()` (name and starting weights; kind, revision and pooling for
    towers users bring).  `precision`: what the tower ran in (`placement.tower_autocast`); a bf16 entry is another
    entry than the float32 one (float32 keys are as they were before precision was recorded)."""
    extra = {} if precision == "fp32" else {"precision": precision}
    payload = json.dumps({"format": CACHE_FORMAT, **identity, **extra,
                          "preprocess": preprocess.describe(), "images": images.fingerprint(),
                          "count": len(images)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _preprocessed(images: ImageSet, preprocess: Preprocess) -> DecodedImages:
    size = preprocess.image_size
    return DecodedImages(images, preprocess, partial(torch.zeros, 3, size, size))  # picklable, for workers


class _FromPixels(Dataset):
    """Rows of a decode-once pixel cache entry, normalised: the same items as `_preprocessed`, bit for bit."""

    def __init__(self, cache, preprocess: Preprocess):
        self.cache, self.preprocess = cache, preprocess

    def __len__(self) -> int:
        return len(self.cache.array)

    def __getitem__(self, index: int):
        error = self.cache.failed.get(index, "")
        if error:
            size = self.preprocess.image_size
            return index, torch.zeros(3, size, size), error
        return index, self.preprocess.normalize(self.cache.array[index]), ""


_decode_once_depth = 0
DECODED_CPU_BATCH = 32  # `compute_features` batches inside `benchmarks_decoded_once` on a CPU


@contextmanager
def benchmarks_decoded_once():
    """Within this block, running a tower over an image set (`compute_features`: a trained image tower in
    evaluation) reads the set's decode-once pixel cache entry (`cache/pixel_cache.py`), building it the first
    time.  The tower-settings study evaluates many trained towers on the same benchmarks: they then decode
    (and render) each benchmark image once in all, not once per arm.  Off by default: the entries take disk
    (N x size^2 x 3 bytes) that a one-off `locktune eval` does not need."""
    global _decode_once_depth
    _decode_once_depth += 1
    try:
        yield
    finally:
        _decode_once_depth -= 1


def _dataset(images: ImageSet, preprocess: Preprocess, workers: int) -> Dataset:
    if _decode_once_depth == 0:
        return _preprocessed(images, preprocess)
    from locktune.cache.pixel_cache import pixel_cache

    return _FromPixels(pixel_cache(images, preprocess, workers=workers, desc="decoding benchmark images once"),
                       preprocess)


@dataclass
class RankRows:
    """One process's share of an image set's features: the rows it computed, on the CPU."""

    indices: list[int]  # image rows, in the order of `features`
    features: torch.Tensor  # [len(indices), D] float32
    failed: dict[str, str]  # image key -> why it could not be read (its row is zero here)


def compute_rank_rows(tower: torch.nn.Module, preprocess: Preprocess, images: ImageSet, batch_size: int = 64,
                      workers: int = 1, desc: str = "embedding images", precision: str = "fp32") -> RankRows:
    """Run the tower over this process's batches (all of them alone; under torchrun the batches dealt
    round-robin, so every batch holds the same images as in a single-process run and the rows are the same bit
    for bit).  The tower runs where its parameters are, in `precision` (bf16: autocast); images are decoded in
    `workers` processes into pinned memory (on CUDA) and copied without blocking, channels-last."""
    world, rank = distributed.world_size(), distributed.rank()
    device = placement.model_device(tower)
    if _decode_once_depth and device.type == "cpu":
        # Measured on 2 cores (EfficientNet-Lite0, 128 px, rows from the pixel cache): 92-107 images/s in
        # batches of 32 against 79-82 in batches of 64.
        batch_size = min(batch_size, DECODED_CPU_BATCH)
    batches = [list(range(start, min(len(images), start + batch_size))) for start in range(0, len(images), batch_size)]
    mine = batches[rank::world]
    # Its own generator: computing the cache must not consume the global RNG, or a run that computes it
    # and one that reuses it would initialise differently.
    dataset = _dataset(images, preprocess, workers)
    loader = DataLoader(dataset, batch_sampler=mine, num_workers=workers if isinstance(dataset, DecodedImages) else 0,
                        generator=torch.Generator().manual_seed(0), pin_memory=placement.pin_memory(device))
    parts: list[torch.Tensor] = []
    indices: list[int] = []
    failed: dict[str, str] = {}
    was_training = tower.training
    tower.eval()
    with torch.no_grad(), progress(total=len(images), desc=desc, unit="img",
                                   enabled=distributed.is_main()) as bar:
        for batch_indices, pixels, errors in loader:
            pixels = pixels.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with placement.tower_autocast(device, precision):
                out = tower(pixels)
            out = out.float().cpu()
            for j, error in enumerate(errors):
                if error:
                    failed[images.keys[int(batch_indices[j])]] = error
                    out[j] = 0.0
            parts.append(out)
            indices.extend(int(i) for i in batch_indices)
            bar.update(len(batch_indices) * world)
    tower.train(was_training)
    if not parts:  # this rank had no batches; learn the width from one forward pass
        size = preprocess.image_size
        with torch.inference_mode():
            width = tower(torch.zeros(1, 3, size, size, device=device)).shape[1]
        parts.append(torch.zeros(0, width))
    return RankRows(indices, torch.cat(parts), failed)


def assemble(shares: list[RankRows], images: ImageSet) -> tuple[torch.Tensor, dict[str, str]]:
    """The whole set's features from the processes' rows, NaN where an image could not be read (and said)."""
    features = torch.zeros(len(images), shares[0].features.shape[1])
    failed: dict[str, str] = {}
    for share in shares:
        if share.indices:
            features[share.indices] = share.features
        failed.update(share.failed)
    if failed:
        key_to_row = {key: row for row, key in enumerate(images.keys)}
        features[[key_to_row[key] for key in failed]] = float("nan")
        if distributed.is_main():
            print(f"locktune: {len(failed)} of {len(images)} images could not be read and were skipped "
                  f"({', '.join(f'{r}: {n}' for r, n in sorted(failure_counts(failed).items()))}; "
                  f"first: {next(iter(failed.items()))})")
    return features, failed


def compute_features(tower: torch.nn.Module, preprocess: Preprocess, images: ImageSet, batch_size: int = 64,
                     workers: int = 1, desc: str = "embedding images",
                     precision: str = "fp32") -> tuple[torch.Tensor, dict[str, str]]:
    """Run the tower over every image (decoding in `workers` processes); NaN rows for unreadable images.

    Under torchrun each process computes its batches and every process gets the whole matrix (as pickled CPU
    rows, which the backend's object collectives carry on its own device: NCCL never sees a CPU tensor).  For a
    trained tower's evaluation sets; a locked tower's cache entries are combined through files instead
    (`cached_features`: no process holds another's rows in flight).
    """
    share = compute_rank_rows(tower, preprocess, images, batch_size, workers, desc, precision)
    shares = [share]
    if distributed.is_distributed():
        import torch.distributed as dist

        shares = [None] * distributed.world_size()
        dist.all_gather_object(shares, share)
    return assemble(shares, images)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_finished_entry(array_path: Path, manifest_path: Path, key: str, count: int, recompute_corrupt: bool,
                        what: str) -> tuple[torch.Tensor, dict] | None:
    """A finished entry's (features, manifest), or None when there is none yet or it is damaged and
    `recompute_corrupt` (then one line says it will be computed again).  A damaged entry otherwise is one error
    naming the file and the two ways on.  `what`: how the entry is named ("embedding cache", "text cache")."""
    if not (array_path.is_file() and manifest_path.is_file()):
        return None
    try:
        return _read_entry(array_path, manifest_path, key, count)
    except ValueError as problem:
        if not recompute_corrupt:
            raise LocktuneError(f"{what} entry '{array_path}' is damaged ({problem}) and was not used; "
                                "delete it, or rerun with data.recompute_corrupt_cache=true to compute it again")
        damaged = "cache" if what == "embedding cache" else what  # the image side's line, as it always read
        print(f"locktune: recomputing damaged {damaged} entry {array_path.name} ({problem})", file=sys.stderr)
    return None


def _read_entry(array_path: Path, manifest_path: Path, key: str, count: int) -> tuple[torch.Tensor, dict]:
    """The stored features after checking them against the manifest; ValueError says what is wrong."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable manifest {manifest_path.name}: {error}")
    if manifest.get("key") != key or manifest.get("count") != count:
        raise ValueError("its manifest describes other images, tower or preprocessing")
    checksum = _sha256(array_path)
    if "sha256" in manifest and manifest["sha256"] != checksum:
        raise ValueError("checksum mismatch (truncated or modified file)")
    try:
        array = np.load(array_path)
    except (OSError, ValueError) as error:
        raise ValueError(f"unreadable array: {error}")
    if array.shape != (count, manifest["dim"]):
        raise ValueError(f"shape {array.shape}, expected {(count, manifest['dim'])}")
    if "sha256" not in manifest:  # written before checksums were recorded: record it now
        manifest["sha256"] = checksum
        tmp = manifest_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(manifest_path)
    return torch.from_numpy(array), manifest


def _entry_paths(tower, preprocess: Preprocess, images: ImageSet, precision: str = "fp32") -> tuple[str, Path, Path]:
    identity = tower.cache_identity()
    key = cache_key(identity, preprocess, images, precision)
    folder = cache_root() / "embeddings"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", identity["tower"]).strip("._")[-60:]  # hf:/a/b -> hf_a_b
    return key, folder / f"{stem}-{key}.npy", folder / f"{stem}-{key}.json"


def _part_path(array_path: Path, rank: int) -> Path:
    """Where process `rank` leaves its rows of an entry being computed (hidden: never mistaken for an entry)."""
    return array_path.with_name(f".{array_path.stem}.rank{rank}.npz")


def _write_part(path: Path, share: RankRows) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, indices=np.asarray(share.indices, dtype=np.int64), features=share.features.numpy(),
                 failed=np.asarray(json.dumps(share.failed)))
    tmp.replace(path)


def _check_parts_visible(parts: list[Path]) -> None:
    """Every rank has written its part: one rank 0 cannot see was written on another node's own disk."""
    for rank, part in enumerate(parts):
        if not part.is_file():
            raise LocktuneError(f"rank {rank}'s embeddings ('{part}') are not visible to rank 0: on several nodes "
                                "the embedding cache folder ($LOCKTUNE_CACHE) must be on a filesystem every node "
                                "shares; set LOCKTUNE_CACHE to such a folder on every node and rerun")


def _read_part(path: Path) -> RankRows:
    with np.load(path, allow_pickle=False) as part:
        return RankRows(part["indices"].tolist(), torch.from_numpy(part["features"].copy()),
                        json.loads(str(part["failed"])))


def has_cache_entry(tower, preprocess: Preprocess, images: ImageSet, precision: str = "fp32") -> bool:
    """Whether a finished entry for these images is there (its array and manifest; not checked further)."""
    _, array_path, manifest_path = _entry_paths(tower, preprocess, images, precision)
    return array_path.is_file() and manifest_path.is_file()


def cached_features(tower, preprocess: Preprocess, images: ImageSet, batch_size: int = 64, workers: int = 1,
                    desc: str = "embedding images", recompute_corrupt: bool = False,
                    precision: str = "fp32") -> CachedFeatures:
    """Reuse the cache entry for these images if there is one, else compute and store it.

    An entry that fails its checks (checksum, shape, manifest) is never used: it is an error naming the
    file, or with `recompute_corrupt` it is computed again.  The manifest is written last, so an entry
    without one is an unfinished write and is simply recomputed.
    """
    identity = tower.cache_identity()
    key, array_path, manifest_path = _entry_paths(tower, preprocess, images, precision)
    folder = array_path.parent
    finished = read_finished_entry(array_path, manifest_path, key, len(images), recompute_corrupt, "embedding cache")
    if finished is not None:
        features, manifest = finished
        return CachedFeatures(features, ~torch.isnan(features).any(1), array_path, False, manifest["failed"])
    start = time.time()
    folder.mkdir(parents=True, exist_ok=True)
    distributed.prepare_to_wait()
    share = compute_rank_rows(tower, preprocess, images, batch_size, workers, desc, precision)
    if distributed.is_distributed():  # each rank writes its rows; rank 0 assembles the entry; the others read it
        part = _part_path(array_path, distributed.rank())
        _write_part(part, share)
        distributed.wait_for_peers()  # ranks finish their rows at different times (on different nodes)
        if not distributed.is_main():
            distributed.wait_for_peers()  # rank 0 writes the entry
            features, manifest = _read_entry(array_path, manifest_path, key, len(images))
            return CachedFeatures(features, ~torch.isnan(features).any(1), array_path, True, manifest["failed"])
        parts = [_part_path(array_path, r) for r in range(distributed.world_size())]
        _check_parts_visible(parts)
        features, failed = assemble([_read_part(p) for p in parts], images)
        for p in parts:
            p.unlink(missing_ok=True)
    else:
        features, failed = assemble([share], images)
    tmp = array_path.with_name(f".{array_path.name}.tmp{os.getpid()}")  # never mistaken for an entry
    with open(tmp, "wb") as f:
        np.save(f, features.numpy())
    tmp.replace(array_path)
    manifest = {"key": key, "format": CACHE_FORMAT, **identity, "precision": precision,
                "preprocess": preprocess.describe(), "images": images.fingerprint(), "count": len(images),
                "dim": int(features.shape[1]), "sha256": _sha256(array_path), "failed": failed,
                "failed_count": len(failed), "failed_reasons": failure_counts(failed), "seconds": round(time.time() - start, 1)}
    tmp_manifest = manifest_path.with_suffix(f".tmp{os.getpid()}")
    tmp_manifest.write_text(json.dumps(manifest, indent=1))
    tmp_manifest.replace(manifest_path)
    distributed.wait_for_peers()  # the others read the entry now
    return CachedFeatures(features, ~torch.isnan(features).any(1), array_path, True, failed)
