"""Latent mixup (FuseMix, Vouitsis et al., CVPR 2024): new pairs made by mixing cached pairs, before the heads.

With both towers locked, a step sees only the towers' cached outputs; the heads can overfit those few thousand
points.  Mixup draws lambda ~ Beta(alpha, alpha) and a partner for every row, and trains on

    image_i <- lambda * image_i + (1 - lambda) * image_partner(i)
    text_i  <- lambda * text_i  + (1 - lambda) * text_partner(i)

with the SAME lambda and the SAME partner on both sides, so mixed image i still belongs to mixed text i and the
contrastive loss's targets do not change.  One lambda per step, as FuseMix's code draws one per batch
(layer6ai-labs/fusemix, `mlp_contrastive_fusion.py`): every pair in a step is mixed by the same amount.  The
partners are a permutation of the step's rows (FuseMix's code pairs the first half of the batch with the second
and halves the batch; a permutation keeps the batch size).

Seeding: lambda from (run seed, step), the permutation from (run seed, step, this process's first row), both on
CPU generators, the permutation then moved to the features' device: the same numbers on any device, and a
resumed run draws what the uninterrupted one drew.  Under torchrun each process permutes its own rows (no rows
cross processes); lambda is the same on every process.  Only pooled features are mixed (`train.mixup_alpha`
needs setting LL and a pooled image head: config.py refuses the others).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from locktune.errors import LocktuneError
from locktune.train.step import Batch, mix_seed

MIXUP_STREAM = 7170424  # a fixed tag ("mix"): mixup's seeds are apart from dropout's (run seed, step, row) seeds


def mixup_draw(alpha: float, seed: int, step: int, rows: int, first_row: int = 0) -> tuple[float, torch.Tensor]:
    """This step's lambda ~ Beta(alpha, alpha) and each row's partner (a CPU permutation of `rows`)."""
    lam = float(np.random.default_rng(mix_seed(seed, step, MIXUP_STREAM)).beta(alpha, alpha))
    generator = torch.Generator().manual_seed(mix_seed(seed, step, MIXUP_STREAM, first_row))
    return lam, torch.randperm(rows, generator=generator)


def mix(features: torch.Tensor, lam: float, partner: torch.Tensor) -> torch.Tensor:
    """lam * features + (1 - lam) * features[partner], in float32 (a float16 cache is read at full precision),
    as a new tensor: the cache's own tensors are never written."""
    x = features.float()
    return lam * x + (1.0 - lam) * x[partner.to(x.device)]


def mix_batch(batch: Batch, alpha: float, seed: int, step: int, first_row: int = 0) -> Batch:
    """The batch with its cached image and text features mixed (alpha 0: the batch itself, untouched)."""
    if not alpha:
        return batch
    text = getattr(batch, "text_features", None)
    if batch.features is None or text is None:
        raise LocktuneError("train.mixup_alpha mixes cached image and text features, but this step has "
                            f"{'no image' if batch.features is None else 'no text'} features; train with "
                            "model.setting=LL and data.text_cache=true, or set train.mixup_alpha=0")
    if batch.features.ndim != 2:
        raise LocktuneError(f"train.mixup_alpha mixes pooled features, but the image side gives tokens "
                            f"{tuple(batch.features.shape)}; use a linear or mlp image head, or train.mixup_alpha=0")
    lam, partner = mixup_draw(alpha, seed, step, len(batch), first_row)
    return dataclasses.replace(batch, features=mix(batch.features, lam, partner), text_features=mix(text, lam, partner))
