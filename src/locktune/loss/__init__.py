"""The training losses, by name (`train.loss`): how a step takes each, and what its scores mean at use time.

    global   softmax InfoNCE, negatives gathered from every process (the default)
    local    softmax InfoNCE, each process's own rows only (the paper's ablation)
    sigmoid  SigLIP's pairwise sigmoid loss with a learned bias, over the global batch

The step asks `get_loss(name)` instead of calling a loss directly; zero-shot, the API and the server ask
`label_probabilities` what a trained model's similarities mean (softmax over labels, or one sigmoid each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from locktune.errors import LocktuneError
from locktune.loss.contrastive import contrastive_loss, contrastive_loss_grads, gather_with_grad, no_gather
from locktune.loss.sigmoid import sigmoid_loss, sigmoid_loss_grads

Grads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Loss:
    name: str
    # One graph over the rank's batch: (model, image_emb, text_emb) -> loss.
    whole: Callable[..., torch.Tensor]
    # For the gradient cache: (model, image_emb, text_emb, chunk_rows) -> (loss, d image_emb, d text_emb);
    # the temperature's (and bias's) gradients go into the model's parameters.
    grads: Callable[..., Grads]
    learns_bias: bool  # the model holds a learned logit bias (`TwoTower.logit_bias`)
    scores: str  # softmax: over the labels, summing to 1 | sigmoid: each label on its own


LOSSES: dict[str, Loss] = {
    "global": Loss("global", lambda m, i, t: contrastive_loss(i, t, m.scale, gather=gather_with_grad),
                   lambda m, i, t, c: contrastive_loss_grads(i, t, m.scale, chunk_rows=c, global_loss=True),
                   learns_bias=False, scores="softmax"),
    "local": Loss("local", lambda m, i, t: contrastive_loss(i, t, m.scale, gather=no_gather),
                  lambda m, i, t, c: contrastive_loss_grads(i, t, m.scale, chunk_rows=c, global_loss=False),
                  learns_bias=False, scores="softmax"),
    "sigmoid": Loss("sigmoid", lambda m, i, t: sigmoid_loss(i, t, m.scale, m.logit_bias),
                    lambda m, i, t, c: sigmoid_loss_grads(i, t, m.scale, m.logit_bias, chunk_rows=c),
                    learns_bias=True, scores="sigmoid"),
}
LOSS_NAMES = tuple(LOSSES)
# Saved models written before the loss was recorded were all trained with a softmax loss.
DEFAULT_LOSS = "global"


def get_loss(name: str) -> Loss:
    """The loss called `name`; an unknown name is a one-line error listing the choices."""
    if name not in LOSSES:
        raise LocktuneError(f"train.loss '{name}' is not one of {', '.join(LOSS_NAMES)}")
    return LOSSES[name]


def label_probabilities(similarities: np.ndarray, loss: str, logit_scale: float,
                        logit_bias: float | None = None) -> np.ndarray:
    """Cosine similarities [images, labels] -> what the model trained with `loss` says of each label.

    softmax losses: softmax over the labels of scale * cos (each row sums to 1).  sigmoid: sigmoid(scale *
    cos + bias) for each label on its own, the probability that this image and this text match (rows do not
    sum to 1; all labels may be unlikely, or several likely).
    """
    logits = logit_scale * np.asarray(similarities, dtype=np.float64)
    if get_loss(loss).scores == "sigmoid":
        if logit_bias is None:
            raise ValueError("a sigmoid-trained model's scores need its logit bias")
        return (0.5 * (1.0 + np.tanh(0.5 * (logits + logit_bias)))).astype(np.float32)  # stable sigmoid
    logits -= logits.max(axis=-1, keepdims=True)  # stable softmax
    exp = np.exp(logits)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


__all__ = ["DEFAULT_LOSS", "LOSSES", "LOSS_NAMES", "Loss", "contrastive_loss", "gather_with_grad", "get_loss",
           "label_probabilities", "sigmoid_loss", "sigmoid_loss_grads"]
