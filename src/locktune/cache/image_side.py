"""Where a model's image side comes from, decided in one place from its tower setting: a locked image tower
is read from the embedding cache (computed once per tower, weights, preprocessing and image set, then shared
by training, evaluation, indexing and other runs); a trained one is run over the decoded images.

Training (`train/images.py`), evaluation (`eval/run.py`) and indexing (`index/build.py`) all ask here."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from locktune.cache.embedding_cache import cached_features, compute_features, has_cache_entry
from locktune.data.images import SubsetImages
from locktune.towers.setting import unwrap

# Why a row that decoded is still not used: a zero or non-finite vector carries no direction, so it would be
# counted as embedded while matching nothing (a std of 0 in the normalisation makes every row so).
ZERO_EMBEDDING = "embedding is zero: check the model's normalisation"
NONFINITE_EMBEDDING = "embedding is not finite (NaN or infinity): check the model's normalisation and weights"


def model_precision(model) -> str:
    """What the image tower runs in (`train.precision`, which training sets on the model): part of a cache entry."""
    return getattr(model, "precision", "fp32")


def reads_cache(model) -> bool:
    """True when the model's image side comes from the cache: its image tower is locked (`L?`)."""
    return model.setting.image_locked


def reads_tokens(model) -> bool:
    """True when the model's image head reads the tower's tokens (`blocks:N`), not its pooled output: a locked
    tower's side then comes from the token cache (`cache/token_cache.py`)."""
    return getattr(model.image_projection, "reads", "pooled") == "tokens"


@dataclass
class ImageFeatures:
    # [N, D] float32, the image tower's pooled outputs (NaN rows where unreadable); for a head that reads tokens,
    # rows [T, D] read on demand from the token cache (`features[ids]`), or a [N, T, D] tensor (trained tower).
    features: torch.Tensor
    valid: torch.Tensor  # [N] bool
    failed: dict[str, str]  # image key -> why it could not be read
    forward_passes: int  # images the tower ran over for this call (0 when the cache had them)

    def zeroed(self) -> torch.Tensor:
        """The features with unusable rows as zeros (safe in a matrix product; mask them with `valid`)."""
        features = self.features if isinstance(self.features, torch.Tensor) else self.features[range(len(self.valid))]
        mask = self.valid.view(-1, *[1] * (features.ndim - 1))
        return torch.where(mask, features, torch.zeros((), dtype=features.dtype))


def unusable_rows(vectors: torch.Tensor, chunk: int = 65536) -> dict[int, str]:
    """Row -> why it is no embedding at all: non-finite anywhere, or zero everywhere.  In chunks of rows, so the
    masks never cost more than a slice of the matrix."""
    rows: dict[int, str] = {}
    for start in range(0, len(vectors), chunk):
        part = vectors[start:start + chunk]
        finite = torch.isfinite(part).all(1)
        zero = finite & (part == 0).all(1)
        rows.update({start + int(r): NONFINITE_EMBEDDING for r in torch.nonzero(~finite).flatten()})
        rows.update({start + int(r): ZERO_EMBEDDING for r in torch.nonzero(zero).flatten()})
    return rows


def honest(features: torch.Tensor, valid: torch.Tensor, failed: dict[str, str], keys) -> tuple[torch.Tensor, dict]:
    """(valid, failed) with every row that decoded but whose features are zero or non-finite counted as
    skipped, with its reason: no caller counts such a row as embedded."""
    bad = {row: why for row, why in unusable_rows(features).items() if keys[row] not in failed}
    if not bad:
        return valid, failed
    valid = valid.clone()
    valid[list(bad)] = False
    return valid, {**failed, **{keys[row]: why for row, why in bad.items()}}


def skipped_summary(failed: dict[str, str]) -> str:
    """'3 skipped: 2 embedding is zero: check ...; 1 not an image' (or '0 skipped'): how many, by reason."""
    from locktune.data.decode import failure_reason

    if not failed:
        return "0 skipped"
    counts: dict[str, int] = {}
    for error in failed.values():
        # Decode errors are shortened to their kind; the embedding reasons (and 'no thumbnail') are short already.
        why = error if error in (ZERO_EMBEDDING, NONFINITE_EMBEDDING, "no thumbnail") else failure_reason(error)
        counts[why] = counts.get(why, 0) + 1
    by_count = sorted(counts.items(), key=lambda item: -item[1])
    return f"{len(failed)} skipped: " + "; ".join(f"{n} {why}" for why, n in by_count)


def image_set_features(model, images, workers: int = 1, desc: str = "embedding images",
                       recompute_corrupt: bool = False) -> ImageFeatures:
    """The image tower's features for every image of `images`, from the cache or from the tower."""
    tower = unwrap(model.image_tower)
    precision = model_precision(model)
    if reads_tokens(model):
        from locktune.cache.token_cache import compute_tokens, token_cache

        if reads_cache(model):
            cache = token_cache(tower, model.preprocess, images, precision=precision, desc=desc.removeprefix("embedding "))
            return ImageFeatures(cache, cache.valid, cache.failed, len(images) if cache.computed else 0)
        tokens, valid, failed = compute_tokens(tower, model.preprocess, images, precision=precision)
        return ImageFeatures(tokens, valid, failed, len(images))
    if reads_cache(model):
        cached = cached_features(tower, model.preprocess, images, workers=workers, desc=desc,
                                 recompute_corrupt=recompute_corrupt, precision=precision)
        valid, failed = honest(cached.features, cached.valid, cached.failed, images.keys)
        return ImageFeatures(cached.features, valid, failed, len(images) if cached.computed else 0)
    features, failed = compute_features(tower, model.preprocess, images, workers=workers, desc=desc,
                                        precision=precision)
    valid, failed = honest(features, ~torch.isnan(features).any(1), failed, images.keys)
    return ImageFeatures(features, valid, failed, len(images))


def _has_entry(model, images) -> bool:
    """Whether the finished cache entry this model's image side reads (pooled or tokens) is there for `images`."""
    tower, precision = unwrap(model.image_tower), model_precision(model)
    if reads_tokens(model):
        from locktune.cache.token_cache import token_folder

        return (token_folder(tower, model.preprocess, images, precision) / "manifest.json").is_file()
    return has_cache_entry(tower, model.preprocess, images, precision)


def source_set_features(model, images, workers: int = 1, desc: str = "embedding images",
                        recompute_corrupt: bool = False) -> ImageFeatures:
    """`image_set_features`, but a `SubsetImages` (the validation split's sides, `data/validation_split.py`) reads
    the rows of its whole source set's entry when that entry is there: every hold-out fraction and
    training-subset size then shares it.  When it is not, the subset gets an entry of its own rather than
    embedding the whole source set for it (a 1,000-pair study subset of 10,032 images: ~25 s instead of
    2 min 43 s cold on 2 cores).  (Not for an evaluation's small sample of a large benchmark.)"""
    if not isinstance(images, SubsetImages) or not reads_cache(model) or \
            not _has_entry(model, images.base):
        return image_set_features(model, images, workers, desc, recompute_corrupt)
    side = image_set_features(model, images.base, workers, desc, recompute_corrupt)
    rows = torch.as_tensor(images.indices, dtype=torch.long)
    mine = set(images.keys)
    features = side.features[rows] if isinstance(side.features, torch.Tensor) else side.features.subset(rows)
    return ImageFeatures(features, side.valid[rows], {k: v for k, v in side.failed.items() if k in mine},
                         side.forward_passes)
