"""Contrastive loss on training pairs vs on held-out, out-of-distribution pairs.

The paper reports both: a model that fits its training distribution but not other data shows a large
gap.  Pairs are scored in batches of `batch_size` (the training batch) with the model's own temperature;
chance is log(batch_size).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from locktune.data.pairs import take_evenly
from locktune.eval.zero_shot import encode_texts


def batched_contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float,
                             batch_size: int) -> float:
    """Mean over consecutive full batches of the symmetric InfoNCE loss (pair i's positive is column i).

    Written here rather than imported from the trainer's loss so evaluation never depends on how a
    training step is distributed or chunked; tests check both against the same reference.
    """
    losses = []
    for start in range(0, len(image_emb) - batch_size + 1, batch_size):
        img, txt = image_emb[start:start + batch_size].float(), text_emb[start:start + batch_size].float()
        logits = logit_scale * img @ txt.T
        target = torch.arange(len(img))
        losses.append(float(F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)
    return float(np.mean(losses))


def choose_pairs(captions: list[list[str]], valid: torch.Tensor, max_pairs: int, seed: int) -> tuple[list[int], list[str]]:
    """Up to max_pairs readable images spread over the set, shuffled (batches mix sources, as in
    training), each with one of its captions drawn at random."""
    rng = np.random.default_rng(seed)
    usable = [i for i in range(len(captions)) if bool(valid[i]) and captions[i]]
    chosen = [usable[j] for j in take_evenly(len(usable), max_pairs)]
    chosen = [chosen[j] for j in rng.permutation(len(chosen))]
    return chosen, [captions[i][rng.integers(len(captions[i]))] for i in chosen]


@torch.no_grad()
def pairs_loss(model, image_emb: torch.Tensor, valid: torch.Tensor, captions: list[list[str]], max_pairs: int,
               batch_size: int, seed: int = 0) -> float:
    rows, texts = choose_pairs(captions, valid, max_pairs, seed)
    if len(rows) < batch_size:
        batch_size = len(rows)
    return batched_contrastive_loss(image_emb[rows], encode_texts(model, texts), float(model.scale), batch_size)


def ood_loss_metrics(train_loss: float, heldout_loss: float, batch_size: int) -> dict[str, float]:
    return {"train_loss": train_loss, "heldout_loss": heldout_loss, "gap": heldout_loss - train_loss,
            "chance_loss": math.log(batch_size), "batch_size": batch_size}
