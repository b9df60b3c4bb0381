"""The model's own training loss on training pairs vs on held-out, out-of-distribution pairs.

The paper reports both: a model that fits its training distribution but not other data shows a large
gap.  Pairs are scored in batches of `batch_size` (the training batch) with the model's own temperature (and,
for a sigmoid-trained model, its own bias), by the loss it was trained with: softmax InfoNCE for `global` and
`local`, SigLIP's pairwise sigmoid loss for `sigmoid` (`loss_name` in the metrics says which).  Losses of
different kinds do not compare; `in_batch_R@1` (each image's caption found among the batch's, and back) does,
whatever the loss.  Chance is the loss of scores that know nothing: log(batch) for softmax, the best constant
probability 1/batch for sigmoid.
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


def batched_sigmoid_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float, logit_bias: float,
                         batch_size: int) -> float:
    """Mean over consecutive full batches of SigLIP's loss, -(1/n) sum_ij log sigmoid(z_ij (t cos_ij + b)),
    z = +1 on the diagonal and -1 elsewhere (as training takes it, `loss/sigmoid.py`; written again here)."""
    losses = []
    for start in range(0, len(image_emb) - batch_size + 1, batch_size):
        img, txt = image_emb[start:start + batch_size].float(), text_emb[start:start + batch_size].float()
        logits = logit_scale * img @ txt.T + logit_bias
        signs = 2 * torch.eye(len(img)) - 1
        losses.append(float(-F.logsigmoid(signs * logits).sum() / len(img)))
    return float(np.mean(losses))


def batched_recall_at_1(image_emb: torch.Tensor, text_emb: torch.Tensor, batch_size: int) -> float:
    """Mean over the same full batches of in-batch R@1, image->text and text->image averaged: a score every
    loss can be compared on (it needs no temperature).  Ties count as misses."""
    hits = []
    for start in range(0, len(image_emb) - batch_size + 1, batch_size):
        sims = image_emb[start:start + batch_size].float() @ text_emb[start:start + batch_size].float().T
        diagonal = sims.diagonal()
        image_to_text = (sims > diagonal[:, None]).sum(1) == 0  # no other caption scores higher
        text_to_image = (sims > diagonal[None, :]).sum(0) == 0
        ties = (sims == diagonal[:, None]).sum(1) > 1
        hits.append(float(((image_to_text & ~ties).float().mean() + (text_to_image & ~ties).float().mean()) / 2))
    return float(np.mean(hits))


def loss_name(model) -> str:
    """'softmax' or 'sigmoid': the kind of loss the model was trained with (what its own loss is)."""
    from locktune.loss import get_loss

    return get_loss(getattr(model, "loss", "global")).scores


def own_loss(model, image_emb: torch.Tensor, text_emb: torch.Tensor, batch_size: int) -> float:
    """The model's own training loss (its kind, temperature and bias) over consecutive full batches."""
    if loss_name(model) == "sigmoid":
        return batched_sigmoid_loss(image_emb, text_emb, float(model.scale), float(model.logit_bias), batch_size)
    return batched_contrastive_loss(image_emb, text_emb, float(model.scale), batch_size)


def chance_loss(kind: str, batch_size: int) -> float:
    """The loss of scores that carry no information: log(n) for softmax; for sigmoid, the best constant
    probability 1/n of a match: -(log(1/n) + (n-1) log(1 - 1/n))."""
    if kind == "sigmoid":
        n = batch_size
        return -(math.log(1 / n) + (n - 1) * math.log1p(-1 / n)) if n > 1 else math.log(2)
    return math.log(batch_size)


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
               batch_size: int, seed: int = 0) -> tuple[float, float]:
    """(the model's own loss, in-batch R@1) over up to `max_pairs` chosen pairs, in batches of `batch_size`."""
    rows, texts = choose_pairs(captions, valid, max_pairs, seed)
    if len(rows) < batch_size:
        batch_size = len(rows)
    image, text = image_emb[rows], encode_texts(model, texts)
    return own_loss(model, image, text, batch_size), batched_recall_at_1(image, text, batch_size)


def ood_loss_metrics(train: tuple[float, float], heldout: tuple[float, float], batch_size: int,
                     kind: str = "softmax") -> dict[str, float]:
    """`train`/`heldout`: (own loss, in-batch R@1) of each set; `kind`: the loss's kind (`loss_name`)."""
    return {"train_loss": train[0], "heldout_loss": heldout[0], "gap": heldout[0] - train[0],
            "chance_loss": chance_loss(kind, batch_size), "batch_size": batch_size, "loss_name": kind,
            "train_in_batch_R@1": train[1], "heldout_in_batch_R@1": heldout[1]}
