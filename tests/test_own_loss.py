"""Each model is scored by its own training loss (issue 29 item 5): validation and ood_loss report the softmax
InfoNCE for softmax-trained models and SigLIP's sigmoid loss, with the model's bias, for sigmoid-trained ones,
named in `loss_name`; in-batch R@1 is the score every loss compares on.  References in float64, by loops."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from locktune.eval.ood_loss import (batched_contrastive_loss, batched_recall_at_1, batched_sigmoid_loss,
                                    chance_loss, own_loss)


def unit_rows(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sigmoid_reference(img, txt, t, b, batch):
    losses = []
    for start in range(0, len(img) - batch + 1, batch):
        total = 0.0
        for i in range(batch):
            for j in range(batch):
                z = 1.0 if i == j else -1.0
                logit = t * float(np.dot(img[start + i], txt[start + j])) + b
                total += math.log1p(math.exp(-z * logit))  # -log sigmoid(z * logit)
        losses.append(total / batch)
    return float(np.mean(losses))


def test_the_sigmoid_loss_matches_a_float64_loop():
    img, txt = unit_rows(10, 6, 0), unit_rows(10, 6, 1)
    got = batched_sigmoid_loss(torch.tensor(img, dtype=torch.float32), torch.tensor(txt, dtype=torch.float32),
                               7.5, -3.0, batch_size=4)  # two full batches, the last two rows left out
    assert got == pytest.approx(sigmoid_reference(img, txt, 7.5, -3.0, 4), rel=1e-5)


def test_chance_is_the_loss_of_scores_that_know_nothing():
    assert chance_loss("softmax", 64) == pytest.approx(math.log(64))
    n = 64
    constant = [(-math.log(p) - (n - 1) * math.log(1 - p)) for p in np.linspace(1e-4, 0.5, 20001)]
    assert chance_loss("sigmoid", n) == pytest.approx(min(constant), rel=1e-6)  # best constant is p = 1/n


def test_in_batch_recall_by_hand():
    image = torch.eye(4)
    text = torch.eye(4)[[0, 1, 3, 2]]  # rows 2 and 3 swapped: half right both ways
    assert batched_recall_at_1(image, text, 4) == pytest.approx(0.5)
    tied = torch.ones(4, 4) / 2  # every similarity equal: ties are misses
    assert batched_recall_at_1(tied, tied, 4) == 0.0


def test_own_loss_follows_the_models_loss():
    img, txt = (torch.tensor(unit_rows(8, 5, s), dtype=torch.float32) for s in (2, 3))
    softmax_model = SimpleNamespace(loss="global", scale=torch.tensor(9.0), logit_bias=None)
    sigmoid_model = SimpleNamespace(loss="sigmoid", scale=torch.tensor(9.0), logit_bias=torch.tensor(-4.0))
    assert own_loss(softmax_model, img, txt, 8) == batched_contrastive_loss(img, txt, 9.0, 8)
    assert own_loss(sigmoid_model, img, txt, 8) == pytest.approx(
        sigmoid_reference(img.double().numpy(), txt.double().numpy(), 9.0, -4.0, 8), rel=1e-5)


def test_a_sigmoid_trained_model_is_validated_on_the_sigmoid_loss(tmp_path):
    """The validation evaluator of a sigmoid-trained tiny model: loss_name says sigmoid, the loss is the
    float64 reference over the model's own embeddings, t and b included."""
    from locktune.eval.evaluators.validation import validation_metrics
    from locktune.eval.zero_shot import encode_texts
    from locktune.model import build_model
    from tests.tiny_configs import tiny_run

    config = tiny_run(tmp_path)
    captions = [[f"caption {i}", f"other {i}"] for i in range(12)]
    model = build_model(config.model, corpus=lambda: (c for caps in captions for c in caps), loss="sigmoid", seed=0)
    model.eval().requires_grad_(False)
    image_emb = torch.nn.functional.normalize(torch.randn(12, model.embed_dim), dim=-1)
    metrics = validation_metrics(model, image_emb, captions, batch_size=6)
    first = encode_texts(model, [caps[0] for caps in captions])
    assert metrics["loss_name"] == "sigmoid" and "contrastive_loss" not in metrics
    expected = sigmoid_reference(image_emb.double().numpy(), first.double().numpy(), float(model.scale),
                                 float(model.logit_bias), 6)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-4)
    assert metrics["chance_loss"] == pytest.approx(chance_loss("sigmoid", 6))
