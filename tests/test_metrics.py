"""Metrics against scikit-learn and a brute-force recall written independently."""

import numpy as np
import torch
from sklearn.metrics import top_k_accuracy_score

from locktune.eval.metrics import retrieval_recalls, topk_accuracy


def test_topk_matches_sklearn_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 7))
    labels = rng.integers(0, 7, size=200)
    for k in (1, 3, 5):
        expected = top_k_accuracy_score(labels, scores, k=k, labels=list(range(7)))
        assert abs(topk_accuracy(torch.tensor(scores), torch.tensor(labels), k) - expected) < 1e-9


def test_ties_count_against_the_model():
    # A constant classifier is right "by a tie" everywhere; it must score 0 top-1, not 100%.
    logits = torch.zeros(4, 3)
    assert topk_accuracy(logits, torch.tensor([0, 1, 2, 0]), 1) == 0.0
    assert topk_accuracy(logits, torch.tensor([0, 1, 2, 0]), 3) == 1.0


def brute_force_recall(sim: np.ndarray, owner: list[int], k: int) -> tuple[float, float]:
    n_img, n_cap = sim.shape
    i2t = 0
    for i in range(n_img):
        order = sorted(range(n_cap), key=lambda j: (-sim[i, j], owner[j] == i))  # ties: wrong ones first
        i2t += any(owner[j] == i for j in order[:k])
    t2i = 0
    for j in range(n_cap):
        order = sorted(range(n_img), key=lambda i: (-sim[i, j], i == owner[j]))
        t2i += owner[j] in order[:k]
    return i2t / n_img, t2i / n_cap


def test_retrieval_with_several_captions_per_image_matches_brute_force():
    rng = np.random.default_rng(1)
    owner = [0, 0, 1, 2, 2, 2, 3, 4, 4, 5]
    sim = rng.normal(size=(6, len(owner))).round(1)  # rounding makes ties
    got = retrieval_recalls(torch.tensor(sim), torch.tensor(owner), ks=(1, 2, 5))
    for k in (1, 2, 5):
        i2t, t2i = brute_force_recall(sim, owner, k)
        assert abs(got[f"image_to_text_R@{k}"] - i2t) < 1e-9
        assert abs(got[f"text_to_image_R@{k}"] - t2i) < 1e-9


def test_retrieval_hand_worked():
    # image 0 owns captions 0,1; image 1 owns caption 2.
    sim = torch.tensor([[0.1, 0.9, 0.5],
                        [0.8, 0.2, 0.3]])
    got = retrieval_recalls(sim, torch.tensor([0, 0, 1]), ks=(1,))
    assert got["image_to_text_R@1"] == 0.5  # image 0 right (caption 1 first); image 1 wrong (caption 0 first)
    assert abs(got["text_to_image_R@1"] - 1 / 3) < 1e-9  # only caption 1 finds its image first
