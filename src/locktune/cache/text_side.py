"""A locked text tower's outputs, computed once per caption and stored like the image side's embedding cache.

With the text tower locked (`?L`) every caption's vector is fixed, so training reads it instead of running the
tower each step: an `LL` step then runs only the heads.  One entry holds every caption of every training pair,
in pair order (`offsets[p]` is pair p's first row), keyed by the tower's identity (name, starting weights,
max_text_len, pooling), the precision it ran in and the caption set's fingerprint: a change to any of them
computes a new entry.  The arrays are float32 .npy files under $LOCKTUNE_CACHE/text-embeddings, written like
`embedding_cache.py`'s (temporary name then rename, manifest last, checked against its sha256 when read).

Computing an entry is resumable: captions are computed in blocks of BLOCK, each block written to a hidden part
file as it finishes, and a rerun after a kill computes only the missing blocks.  Under torchrun the blocks left
are dealt round-robin over the ranks; rank 0 assembles the entry from the part files (so the cache folder must
be one every node sees, as for the image side) and the others read it.

Each caption is embedded from the same token ids training would give the tower (its tokenizer at
max_text_len, then `trim_padding` of its batch), so a cached vector equals the live forward's to float
rounding; captions are batched by length, which only removes padding the tower masks anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from locktune.cache.embedding_cache import _read_entry, _sha256, read_finished_entry
from locktune.errors import LocktuneError
from locktune.progress import progress
from locktune.runtime import distributed, placement
from locktune.runtime.location import cache_root
from locktune.towers.setting import unwrap
from locktune.towers.text.base import trim_padding

TEXT_CACHE_FORMAT = 1
BLOCK = 8192  # captions per resumable part file
BATCH = 256  # captions per tower forward


def text_identity(tower) -> dict:
    """What a text-side entry is keyed by: the tower's name and starting weights, and what shapes its output
    (max_text_len: where captions are cut; pooling: which vector is returned)."""
    tower = unwrap(tower)
    fingerprint = getattr(tower, "weights_fingerprint", None)
    return {"tower": tower.name, "weights": fingerprint() if fingerprint is not None else "random",
            "max_len": int(tower.max_len), "pool": getattr(tower, "pool", "auto")}


def reads_text_cache(model, config) -> bool:
    """The one place that decides whether training reads the text side from a cache: a locked text tower
    (`?L`) and data.text_cache on."""
    return bool(model.setting.text_locked and config.data.text_cache)


def caption_offsets(captions: Sequence[Sequence[str]]) -> np.ndarray:
    """int64 [pairs + 1]: pair p's captions are rows offsets[p]:offsets[p + 1] of an entry."""
    offsets = np.zeros(len(captions) + 1, np.int64)
    np.cumsum([len(captions[i]) for i in range(len(captions))], out=offsets[1:])
    return offsets


def captions_fingerprint(captions: Sequence[Sequence[str]]) -> str:
    """sha256 of every caption in pair order, with the pair boundaries: another caption set is another entry."""
    digest = hashlib.sha256()
    for i in range(len(captions)):
        digest.update("\x1e".join(captions[i]).encode("utf-8", "surrogatepass") + b"\x1d")
    return digest.hexdigest()


@dataclass
class CachedText:
    features: torch.Tensor  # [captions, D] float32: the tower's output for every caption, in pair order
    offsets: np.ndarray  # int64 [pairs + 1]
    path: Path
    computed: int  # captions the tower ran over for this call (0 when the entry was reused)

    def rows(self, pair_ids: Sequence[int], choices: Sequence[int]) -> torch.Tensor:
        """[len(pair_ids), D]: caption `choice % (its captions)` of each pair, as the batch plan draws it."""
        pair_ids = np.asarray(pair_ids, np.int64)
        counts = self.offsets[pair_ids + 1] - self.offsets[pair_ids]
        return self.features[torch.from_numpy(self.offsets[pair_ids] + np.asarray(choices, np.int64) % counts)]


def embed_captions(tower, texts: list[str], precision: str = "fp32", batch_size: int = BATCH,
                   bar=None) -> torch.Tensor:
    """The tower's outputs for `texts` ([n, D] float32 on the CPU), run where its parameters are, in
    `precision`.  Batches of similar length, each trimmed of the padding all its rows share (as training
    trims a batch), so short captions cost little."""
    device = placement.model_device(tower)
    tokens = unwrap(tower).tokenize(texts)
    ids, mask = tokens["ids"], tokens["mask"]
    order = torch.argsort(mask.sum(1), stable=True)
    out: torch.Tensor | None = None
    was_training = tower.training
    tower.eval()
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            part_ids, part_mask = trim_padding(ids[rows], mask[rows])
            with placement.tower_autocast(device, precision):
                vectors = tower(part_ids.to(device, non_blocking=True), part_mask.to(device, non_blocking=True))
            vectors = vectors.float().cpu()
            if out is None:
                out = torch.empty(len(texts), vectors.shape[1])
            out[rows] = vectors
            if bar is not None:
                bar.update(len(rows))
    tower.train(was_training)
    return out if out is not None else torch.zeros(0, int(unwrap(tower).output_dim))


def _entry_paths(identity: dict, key: str) -> tuple[Path, Path]:
    folder = cache_root() / "text-embeddings"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", identity["tower"]).strip("._")[-60:]
    return folder / f"{stem}-{key}.npy", folder / f"{stem}-{key}.json"


def _block_path(array_path: Path, block: int) -> Path:
    """Where a finished block of an entry being computed waits (hidden: never mistaken for an entry)."""
    return array_path.with_name(f".{array_path.stem}.block{block:05d}.npy")


def _write_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
    tmp.replace(path)


def text_cache_key(identity: dict, captions: Sequence[Sequence[str]], count: int, precision: str) -> str:
    payload = json.dumps({"format": TEXT_CACHE_FORMAT, **identity, "precision": precision,
                          "captions": captions_fingerprint(captions), "count": count}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cached_text_features(tower, captions: Sequence[Sequence[str]], precision: str = "fp32",
                         desc: str = "embedding captions", recompute_corrupt: bool = False) -> CachedText:
    """Every caption's vector from the entry for (tower, captions, precision), computing what is missing.

    A damaged entry (checksum, shape, manifest) is an error naming the file, or with `recompute_corrupt` it is
    computed again; an unfinished one (no manifest) resumes from its finished blocks."""
    identity = text_identity(tower)
    offsets = caption_offsets(captions)
    count = int(offsets[-1])
    key = text_cache_key(identity, captions, count, precision)
    array_path, manifest_path = _entry_paths(identity, key)
    finished = read_finished_entry(array_path, manifest_path, key, count, recompute_corrupt, "text cache")
    if finished is not None:
        return CachedText(finished[0], offsets, array_path, 0)
    start = time.time()
    array_path.parent.mkdir(parents=True, exist_ok=True)
    distributed.prepare_to_wait()
    world, rank = distributed.world_size(), distributed.rank()
    blocks = range(-(-count // BLOCK))
    # Each rank checks a share of the blocks, then the missing ones are dealt over all ranks.
    todo = distributed.union_over_ranks([b for b in blocks[rank::world] if not _block_path(array_path, b).is_file()])
    mine = todo[rank::world]
    flat = [caption for i in range(len(captions)) for caption in captions[i]]
    computed = sum(min(count, (b + 1) * BLOCK) - b * BLOCK for b in todo)
    with progress(total=computed, desc=desc, unit="caption", enabled=distributed.is_main()) as bar:
        for block in mine:
            vectors = embed_captions(tower, flat[block * BLOCK:(block + 1) * BLOCK], precision, bar=bar)
            _write_array(_block_path(array_path, block), vectors.numpy())
            if world > 1:
                bar.update(len(vectors) * (world - 1))  # the others' blocks, as the image side counts them
    distributed.wait_for_peers()  # ranks finish their blocks at different times
    if not distributed.is_main():
        distributed.wait_for_peers()  # rank 0 writes the entry
        features, _ = _read_entry(array_path, manifest_path, key, count)
        return CachedText(features, offsets, array_path, computed)
    parts = [_block_path(array_path, b) for b in blocks]
    missing = [p for p in parts if not p.is_file()]
    if missing:
        raise LocktuneError(f"text cache block '{missing[0]}' is not visible to rank 0: on several nodes the cache "
                            "folder ($LOCKTUNE_CACHE) must be on a filesystem every node shares; set LOCKTUNE_CACHE "
                            "to such a folder on every node and rerun")
    width = int(unwrap(tower).output_dim)
    features = torch.from_numpy(np.concatenate([np.load(p) for p in parts])) if parts else torch.zeros(0, width)
    _write_array(array_path, features.numpy())
    manifest = {"key": key, "format": TEXT_CACHE_FORMAT, "kind": "text", **identity, "precision": precision,
                "captions": captions_fingerprint(captions), "pairs": len(captions), "count": count,
                "dim": int(features.shape[1]), "sha256": _sha256(array_path), "failed": {},
                "seconds": round(time.time() - start, 1)}
    tmp = manifest_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(manifest_path)
    for part in parts:
        part.unlink(missing_ok=True)
    distributed.wait_for_peers()  # the others read the entry now
    return CachedText(features, offsets, array_path, computed)
