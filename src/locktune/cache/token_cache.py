"""A locked image tower's token outputs [T, D] per image, computed once, for `blocks:N` heads (dino.txt).

Keyed like the embedding cache (tower, starting weights, preprocessing, precision, image set) plus "tokens";
the pooling is left out (tokens come before it).  Tokens are T times the size of a pooled vector, so they are
stored in float16, in shards of a fixed number of rows, read back through memory maps (a batch touches only its
own rows), and the size is printed before anything is computed, with a refusal when the disk cannot hold it.

Layout of an entry, under $LOCKTUNE_CACHE/tokens/<tower>-<key>/:
    00000.npy    [rows, T, D] float16; rows of images that could not be read (or gave no usable tokens) are 0
    00000.json   the shard's rows, sha256 and unusable rows with why; written after its array, so a shard with a
                 matching sidecar is finished and a rerun (killed mid-way) skips it: resumable per shard
    manifest.json  written last: the key, the shape and every shard
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from locktune.cache.embedding_cache import CACHE_FORMAT, _sha256
from locktune.errors import LocktuneError
from locktune.progress import progress
from locktune.runtime import distributed, placement
from locktune.runtime.location import cache_root
from locktune.towers.image.base import token_shape

TOKEN_FORMAT = 1
SHARD_ROWS = 1024  # images per shard: 1024 x 16 x 1280 x 2 bytes = 40 MiB for efficientnet_lite0 at 128 px
# Free space kept beyond the cache's own size: other files share the disk, and a full disk fails everything.
DISK_MARGIN_BYTES = 256 * 2**20
DISK_MARGIN_SHARE = 0.05
ZERO_TOKENS = "tokens are zero: check the model's normalisation"
NONFINITE_TOKENS = "tokens are not finite (NaN, infinity, or beyond float16's range): check the model's weights"


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def token_key(tower, preprocess, images, precision: str = "fp32") -> str:
    identity = {k: v for k, v in tower.cache_identity().items() if k != "pool"}
    payload = json.dumps({"format": CACHE_FORMAT, "token_format": TOKEN_FORMAT, "outputs": "tokens", **identity,
                          "precision": precision, "preprocess": preprocess.describe(),
                          "images": images.fingerprint(), "count": len(images)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def token_folder(tower, preprocess, images, precision: str = "fp32") -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", tower.cache_identity()["tower"]).strip("._")[-60:]
    return cache_root() / "tokens" / f"{stem}-{token_key(tower, preprocess, images, precision)}"


class TokenCache:
    """A finished entry.  `rows(ids)` -> float32 [len(ids), T, D] (any order, repeats allowed); `valid`: bool
    [N]; `failed`: image key -> why its row is not usable; `computed`: whether this process built it."""

    def __init__(self, folder: Path, manifest: dict, computed: bool = False):
        self.folder, self.manifest, self.computed = folder, manifest, computed
        self.count, self.shard_rows = int(manifest["count"]), int(manifest["shard_rows"])
        self.shape = (int(manifest["tokens"]), int(manifest["dim"]))
        self.valid = torch.ones(self.count, dtype=torch.bool)
        self.failed: dict[str, str] = {}
        self._arrays: list[np.ndarray] = []
        for number, shard in enumerate(manifest["shards"]):
            self._arrays.append(np.load(folder / shard["file"], mmap_mode="r"))  # nothing read until asked
            for row, (key, why) in shard["unusable"].items():
                self.valid[number * self.shard_rows + int(row)] = False
                self.failed[key] = why

    def __len__(self) -> int:
        return self.count

    def rows(self, ids) -> torch.Tensor:
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        out = np.empty((len(ids), *self.shape), np.float32)
        shards = ids // self.shard_rows
        for shard in np.unique(shards):
            where = np.nonzero(shards == shard)[0]
            out[where] = self._arrays[int(shard)][ids[where] - shard * self.shard_rows]
        return torch.from_numpy(out)

    __getitem__ = rows

    def subset(self, ids) -> "TokenRows":
        return TokenRows(self, np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64))


class TokenRows:
    """Some rows of a token cache, renumbered 0..n-1 and read on demand (a training subset of a source set)."""

    def __init__(self, cache: TokenCache, index: np.ndarray):
        self.cache, self.index = cache, index

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, ids) -> torch.Tensor:
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
        return self.cache.rows(self.index[ids])

    __getitem__ = rows

    def subset(self, ids) -> "TokenRows":
        return TokenRows(self.cache, self.index[np.asarray(ids, dtype=np.int64)])


def _sidecar(folder: Path, shard: int, rows: int, shape: tuple[int, int]) -> dict | None:
    """The finished shard's sidecar, or None when the shard is missing, partial or another shape."""
    try:
        meta = json.loads((folder / f"{shard:05d}.json").read_text())
    except (OSError, ValueError):
        return None
    array = folder / meta.get("file", "")
    expected = 128 + rows * shape[0] * shape[1] * 2  # .npy header (at most 128 bytes for these shapes) + data
    if meta.get("rows") != rows or meta.get("shape") != list(shape) or not array.is_file() or \
            array.stat().st_size > expected or array.stat().st_size < expected - 128:
        return None
    return meta


def _check_space(folder: Path, count: int, todo_rows: int, shape: tuple[int, int], desc: str) -> None:
    """Print the entry's size; refuse, naming it and the free space, when the disk cannot hold what is left."""
    per_row = shape[0] * shape[1] * 2
    total, need = count * per_row, todo_rows * per_row
    if distributed.is_main():
        left = "" if need == total else f"; {human_bytes(need)} of it still to compute"
        print(f"locktune: token cache for {desc}: {count} images x {shape[0]} tokens x {shape[1]} x 2 bytes = "
              f"{human_bytes(total)} ({folder}{left})", file=sys.stderr)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = DISK_MARGIN_BYTES + DISK_MARGIN_SHARE * need
    if need + margin > free:
        raise LocktuneError(f"the token cache for {desc} needs {human_bytes(need)} but '{probe}' has "
                            f"{human_bytes(free)} free (keeping {human_bytes(margin)} spare); free space, set "
                            "LOCKTUNE_CACHE to a larger disk, lower model.image_size, or use a pooled head "
                            "(model.image_head=linear)")


def _unusable(block: np.ndarray) -> dict[int, str]:
    """Row -> why its tokens are no input at all: non-finite anywhere (float16 overflow too), or all zero."""
    flat = block.reshape(len(block), -1)
    finite = np.isfinite(flat).all(1)
    zero = finite & ~flat.any(1)
    return {**{int(r): NONFINITE_TOKENS for r in np.flatnonzero(~finite)},
            **{int(r): ZERO_TOKENS for r in np.flatnonzero(zero)}}


def _compute_shard(tower, preprocess, images, rows: range, shape: tuple[int, int], batch_size: int,
                   precision: str, bar, dtype=np.float16) -> tuple[np.ndarray, dict[int, str]]:
    """[rows, T, D] tokens of one shard's images; unreadable or unusable rows zeroed, with why."""
    device = placement.model_device(tower)
    out = np.zeros((len(rows), *shape), dtype)
    unusable: dict[int, str] = {}
    for start in range(0, len(rows), batch_size):
        batch, pixels = [], []
        for local in range(start, min(len(rows), start + batch_size)):
            try:
                pixels.append(preprocess(images.load(rows[local])))
                batch.append(local)
            except Exception as error:  # any decoder failure: skip and count, never end the build
                unusable[local] = f"{type(error).__name__}: {error}"[:200]
        if pixels:
            with torch.no_grad(), placement.tower_autocast(device, precision):
                tokens = tower.tokens(torch.stack(pixels).to(device))
            out[batch] = tokens.float().cpu().numpy().astype(dtype)
        bar.update(min(len(rows), start + batch_size) - start)
    for local, why in _unusable(out).items():
        unusable.setdefault(local, why)
    out[list(unusable)] = 0
    return out, unusable


def _write_shard(folder: Path, shard: int, array: np.ndarray, unusable: dict[int, str], keys: list[str]) -> None:
    path = folder / f"{shard:05d}.npy"
    tmp = folder / f".{shard:05d}.npy.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, array)
    tmp.replace(path)
    meta = {"file": path.name, "rows": len(array), "shape": list(array.shape[1:]), "sha256": _sha256(path),
            "unusable": {str(r): [keys[r], why] for r, why in sorted(unusable.items())}}
    side = folder / f".{shard:05d}.json.tmp{os.getpid()}"
    side.write_text(json.dumps(meta))
    side.replace(folder / f"{shard:05d}.json")


def token_cache(tower, preprocess, images, precision: str = "fp32", batch_size: int = 32,
                desc: str = "images") -> TokenCache:
    """The entry for these images, built (or finished) first when needed.  `tower` must be the bare tower
    (`unwrap`ped), in the precision the model runs in.  Under torchrun the unfinished shards are dealt over the
    ranks; rank 0 writes the manifest once every rank is done (the cache folder must be shared by all)."""
    folder = token_folder(tower, preprocess, images, precision)
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        return TokenCache(folder, json.loads(manifest_path.read_text()))
    shape = token_shape(tower, preprocess)
    count = len(images)
    shards = [range(s, min(count, s + SHARD_ROWS)) for s in range(0, count, SHARD_ROWS)]
    world, rank = distributed.world_size(), distributed.rank()
    distributed.prepare_to_wait()
    # Each rank checks its share of the sidecars; the unfinished ones are then dealt over all ranks.
    todo = [s for s in range(len(shards))[rank::world] if _sidecar(folder, s, len(shards[s]), shape) is None]
    todo = distributed.union_over_ranks(todo) if world > 1 else todo
    _check_space(folder, count, sum(len(shards[s]) for s in todo), shape, desc)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = tower.training
    tower.eval()
    mine = todo[rank::world]
    with progress(total=sum(len(shards[s]) for s in mine), desc=f"token cache: {desc}", unit="img",
                  enabled=distributed.is_main()) as bar:
        for shard in mine:
            rows = shards[shard]
            array, unusable = _compute_shard(tower, preprocess, images, rows, shape, batch_size, precision, bar)
            _write_shard(folder, shard, array, unusable, [images.keys[i] for i in rows])
    tower.train(was_training)
    distributed.wait_for_peers()  # ranks finish their shards at different times
    if distributed.is_main():
        metas = [_sidecar(folder, s, len(rows), shape) for s, rows in enumerate(shards)]
        missing = [s for s, meta in enumerate(metas) if meta is None]
        if missing:
            raise LocktuneError(f"token cache '{folder}': shard {missing[0]:05d} is missing after the build (another "
                                "node's disk?); the cache folder must be shared by every node")
        manifest = {"token_format": TOKEN_FORMAT, "key": folder.name, "count": count, "shard_rows": SHARD_ROWS,
                    "tokens": shape[0], "dim": shape[1], "dtype": "float16", "precision": precision,
                    "identity": {k: v for k, v in tower.cache_identity().items() if k != "pool"},
                    "preprocess": preprocess.describe(), "images": images.fingerprint(), "shards": metas}
        tmp = folder / f".manifest.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(manifest_path)
    distributed.wait_for_peers()  # the others open the finished entry now
    return TokenCache(folder, json.loads(manifest_path.read_text()), computed=True)


def compute_tokens(tower, preprocess, images, precision: str = "fp32",
                   batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """(tokens [N, T, D] float32, valid [N], failed) of a trained tower, in memory (evaluation of a `U?` model
    with a blocks head: its tower changes every step, so nothing is cached)."""
    shape = token_shape(tower, preprocess)
    was_training = tower.training
    tower.eval()
    with progress(total=len(images), desc="tokens", unit="img", enabled=distributed.is_main()) as bar:
        array, unusable = _compute_shard(tower, preprocess, images, range(len(images)), shape, batch_size,
                                         precision, bar, np.float32)
    tower.train(was_training)
    valid = torch.ones(len(images), dtype=torch.bool)
    valid[list(unusable)] = False
    return torch.from_numpy(array), valid, {images.keys[r]: why for r, why in unusable.items()}
