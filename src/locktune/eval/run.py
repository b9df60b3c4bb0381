"""The image side of every evaluator: pooled features or embeddings of an image set.

With a locked image tower they come from the embedding cache (shared with training and with other runs),
so evaluating a new text tower costs only text forward passes; a trained image tower runs over the images
(once per set inside `remembered_features()`).  The evaluators themselves live in `eval/evaluators/`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from locktune.cache.image_side import image_set_features, reads_cache

_remembered: dict | None = None  # set inside `remembered_features()`


@contextmanager
def remembered_features():
    """Inside this block an unlocked (trained) image tower runs over each image set once, however many
    evaluators read it (zero-shot and few-shot on one benchmark, retrieval and the held-out loss).  Only
    for a block in which the model does not change; a locked tower uses the disk cache instead."""
    global _remembered
    outer, _remembered = _remembered, {}
    try:
        yield
    finally:
        _remembered = outer


def image_features(model, images, workers: int = 1, desc: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The image tower's pooled features [N, D] (zeros where unreadable) and the valid mask [N]."""
    key = (id(model), images.fingerprint(), repr(model.preprocess.describe()))
    if not reads_cache(model) and _remembered is not None and key in _remembered:
        return _remembered[key]
    side = image_set_features(model, images, workers=workers, desc=desc)
    out = (side.zeroed(), side.valid)
    if not reads_cache(model) and _remembered is not None:
        _remembered[key] = out
    return out


def image_embeddings(model, images, workers: int = 1, desc: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised embeddings [N, dim], valid mask [N]), on the CPU: the model runs on its device, the metrics
    beside the benchmark's labels and masks on the host."""
    features, valid = image_features(model, images, workers, desc)
    with torch.no_grad():
        return model.embed_image_features(features).cpu(), valid
