"""The training loop's image side, decided once from the tower setting (`cache/image_side.py`): a locked
tower's features are rows of a cache (the sharded cache, or the embedding cache computed here once); a
trained tower's images are decoded per batch, or (data.decode_once) decoded once into a uint8 pixel cache
whose rows each batch reads.  Either way the loop asks `take(rows)`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from locktune.cache.image_side import reads_cache, reads_tokens, source_set_features
from locktune.cache.pixel_cache import PixelCache, pixel_cache
from locktune.cache.sharded import ShardedCache
from locktune.errors import LocktuneError
from locktune.towers.setting import unwrap


def check_matches(sharded: ShardedCache, model, where: str) -> None:
    """A sharded cache is only used for the tower, weights and preprocessing it was computed with."""
    tower = unwrap(model.image_tower)
    if not reads_cache(model):
        raise LocktuneError(f"data.embedding_cache '{where}' holds a locked image tower's embeddings, but setting "
                            f"'{model.setting}' trains the image tower; use an 'L?' setting or drop the cache")
    if reads_tokens(model):
        raise LocktuneError(f"data.embedding_cache '{where}' holds pooled vectors, but model.image_head "
                            f"'{model.config.image_head}' reads the tower's tokens; drop data.embedding_cache (the "
                            "token cache is built on first use) or use a pooled head (linear, mlp)")
    expected = {**tower.cache_identity(), "preprocess": model.preprocess.describe()}
    for key, value in expected.items():
        if sharded.manifest.get(key) != json.loads(json.dumps(value)):  # as the manifest stores it
            raise LocktuneError(f"data.embedding_cache '{where}' was computed with another {key} "
                                f"({sharded.manifest.get(key)!r}, this model: {value!r}); rebuild it with "
                                "`locktune embed --sharded` and this model's config")


class BatchDecoder:
    """Decodes a batch's images for a trained image tower.  An image that cannot be read is counted in
    `skipped` and its pair replaced by the next readable one in the plan's order (the same one every time,
    so runs stay deterministic and `--resume` exact) instead of stopping the run."""

    def __init__(self, images, usable: np.ndarray, preprocess, skipped: dict[str, str],
                 decoded: PixelCache | None = None):
        self.images, self.usable, self.preprocess, self.skipped = images, usable, preprocess, skipped
        self.decoded = decoded  # data.decode_once: every image's pixels, decoded once (`cache/pixel_cache.py`)
        self.unreadable: set[int] = set()

    def _load(self, row: int) -> torch.Tensor | None:
        if row in self.unreadable:
            return None
        index = int(self.usable[row])
        if self.decoded is not None:
            error = self.decoded.failed.get(index)
            if error is None:
                return self.preprocess.normalize(self.decoded.array[index])
            return self._unreadable(row, index, error)
        try:
            return self.preprocess(self.images.load(index))
        except Exception as error:  # any decoder failure: skip and count, never end the run
            return self._unreadable(row, index, f"{type(error).__name__}: {error}", error)

    def _unreadable(self, row: int, index: int, message: str, error: Exception | None = None) -> None:
        """Count the row's image as skipped (once); more than half unreadable ends the run."""
        self.unreadable.add(row)
        self.skipped[self.images.keys[index]] = message[:200]
        if len(self.unreadable) > len(self.usable) // 2:
            detail = message.split(": ", 1)[-1] if error is None else error
            raise LocktuneError(f"more than half of the {len(self.usable)} training images cannot be read "
                                f"(e.g. {self.images.keys[index]}: {detail}); check the data source") from error
        return None

    def pixels(self, rows: list[int]) -> tuple[torch.Tensor, list[int]]:
        out, used = [], []
        for row in rows:
            candidate = row
            while (tensor := self._load(candidate)) is None:
                candidate = (candidate + 1) % len(self.usable)
            out.append(tensor)
            used.append(candidate)
        return torch.stack(out), used


def next_usable_rows(valid: np.ndarray, where: str) -> np.ndarray:
    """For each row, the first usable row at or after it (wrapping around): the rule `BatchDecoder` applies to
    unreadable images, applied up front to cached features whose image was skipped.  Refused, as a decoder
    refuses it, when more than half of the rows are unusable."""
    valid = np.asarray(valid, dtype=bool)
    usable = np.flatnonzero(valid)
    if len(usable) * 2 < len(valid):
        raise LocktuneError(f"more than half of the {len(valid)} training images in '{where}' could not be embedded "
                            f"({len(valid) - len(usable)} skipped); check the data source")
    after = np.searchsorted(usable, np.arange(len(valid)))  # index into `usable` of the first usable row >= each row
    return usable[after % len(usable)]


@dataclass
class TrainingImages:
    usable: np.ndarray  # pair index of each row of the plan: every training pair (numpy: ~8 bytes a pair)
    caption_counts: np.ndarray  # captions of each usable pair
    feature_rows: object | None = None  # pair indices -> cached features [n, D] (locked tower)
    decoder: BatchDecoder | None = None  # decodes rows' images (trained tower)
    forward_passes: int = 0  # images the tower ran over during this run
    # Cached features: pair index -> the pair whose features (and caption) stand in for it, itself when usable.
    next_usable: np.ndarray | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, model, config, pairs, sharded: ShardedCache | None, captions) -> "TrainingImages":
        """The plan's rows are every training pair, in every arm: a locked tower's skipped images are replaced
        at `take` by the next usable row, as a trained tower's unreadable ones are by `BatchDecoder`, so the
        same seed draws the same batches whatever an arm's image side skips (paired seeds, `data_order.py`)."""
        if sharded is not None:
            check_matches(sharded, model, config.data.embedding_cache)
            valid = sharded.valid.numpy()
            return cls(np.arange(len(valid)), np.maximum(sharded.caption_counts(), 1), feature_rows=sharded.rows,
                       next_usable=next_usable_rows(valid, config.data.embedding_cache))
        usable, images = np.arange(len(captions)), cls(np.arange(0), np.arange(0))
        if reads_cache(model):
            # A training subset (data/validation_split.py) reads its source set's entry: one per source set.
            side = source_set_features(model, pairs.images, workers=config.data.image_workers,
                                       desc=f"embedding {pairs.name}", recompute_corrupt=config.data.recompute_corrupt_cache)
            images = cls(usable, np.zeros(0), feature_rows=side.features.__getitem__,
                         forward_passes=side.forward_passes, skipped=dict(side.failed),
                         next_usable=next_usable_rows(side.valid.numpy(), pairs.name))
        images.usable = usable
        images.caption_counts = np.fromiter((len(captions[i]) for i in usable), np.int32, len(usable))
        if images.feature_rows is None:
            decoded = (pixel_cache(pairs.images, model.preprocess, workers=config.data.image_workers,
                                   desc=f"decoding {pairs.name} once") if config.data.decode_once else None)
            images.decoder = BatchDecoder(pairs.images, usable, model.preprocess, images.skipped, decoded)
        return images

    def take(self, rows: list[int]) -> tuple[list[int], torch.Tensor | None, torch.Tensor | None]:
        """(pair indices, cached features or None, decoded pixels or None) for the plan's rows; an unreadable
        image's row is replaced by the next readable one (so its caption is taken from that pair)."""
        if self.feature_rows is not None:
            pair_ids = self.next_usable[self.usable[rows]].tolist()
            return pair_ids, self.feature_rows(pair_ids), None
        pixels, rows = self.decoder.pixels(rows)
        self.forward_passes += len(rows)
        return self.usable[rows].tolist(), None, pixels
