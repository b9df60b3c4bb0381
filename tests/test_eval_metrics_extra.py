"""Zero-shot, per-language retrieval and the held-out loss against independent computations."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion, recall_score, top_k_accuracy_score

from locktune.eval.metrics import confusion_matrix, per_class_recall, topk_accuracy
from locktune.eval.multilingual import multilingual_metrics
from locktune.eval.ood_loss import batched_contrastive_loss, choose_pairs
from locktune.eval.zero_shot import class_embeddings, encode_texts, zero_shot_metrics


class TableModel:
    """A stand-in text tower: each distinct text maps to a fixed random unit vector."""

    def __init__(self, dim=6, seed=0):
        self.dim, self.vectors, self.rng = dim, {}, np.random.default_rng(seed)

    def vector(self, text):
        if text not in self.vectors:
            self.vectors[text] = self.rng.normal(size=self.dim)
        return self.vectors[text]

    def tokenize(self, texts):
        self.last = list(texts)
        return {"ids": torch.tensor(np.array([self.vector(t) for t in texts])), "mask": None}

    def encode_text(self, ids, mask):
        return F.normalize(ids.float(), dim=-1)


def test_encode_texts_keeps_the_callers_order():
    model = TableModel()
    texts = ["a much longer caption than the others", "b", "medium one", "c"]
    got = encode_texts(model, texts, batch_size=2)
    for row, text in zip(got, texts):
        assert torch.allclose(row, F.normalize(torch.tensor(model.vector(text)).float(), dim=0))


def test_prompt_ensemble_is_mean_then_renormalise_hand_worked():
    model = TableModel()
    got = class_embeddings(model, ["cat", "dog"], ["a {}.", "a photo of a {}."])
    for i, name in enumerate(["cat", "dog"]):
        a = model.vector(f"a {name}.") / np.linalg.norm(model.vector(f"a {name}."))
        b = model.vector(f"a photo of a {name}.") / np.linalg.norm(model.vector(f"a photo of a {name}."))
        mean = (a + b) / 2
        assert np.allclose(got[i].numpy(), mean / np.linalg.norm(mean), atol=1e-6)


def test_zero_shot_metrics_match_sklearn_with_ties_and_few_classes():
    rng = np.random.default_rng(2)
    images = F.normalize(torch.tensor(rng.normal(size=(60, 4))), dim=-1)
    classes = F.normalize(torch.tensor(rng.normal(size=(3, 4))), dim=-1)
    labels = torch.tensor(rng.integers(0, 3, size=60))
    got = zero_shot_metrics(images, labels, classes)
    logits = (images @ classes.T).numpy()
    assert abs(got["top1"] - top_k_accuracy_score(labels, logits, k=1)) < 1e-9
    assert got["top5"] == 1.0  # top-5 of 3 classes is top-3
    predictions = logits.argmax(1)
    assert abs(got["mean_per_class_recall"] - recall_score(labels, predictions, average="macro")) < 1e-9
    assert per_class_recall(torch.tensor(logits), labels, 3) == list(recall_score(labels, predictions, average=None))
    assert np.array_equal(confusion_matrix(torch.tensor(logits), labels, 3).numpy(), sk_confusion(labels, predictions))
    # The majority-class baseline: the largest class's share, counted independently.
    counts = np.bincount(labels.numpy(), minlength=3)
    assert got["majority_top1"] == counts.max() / 60 and got["chance_top1"] == 1 / 3
    assert zero_shot_metrics(images[:4], torch.tensor([2, 2, 2, 0]), classes)["majority_top1"] == 0.75
    # Ties: identical scores for all classes count as wrong at top-1 (a constant model is at 0, not 100%).
    assert topk_accuracy(torch.ones(5, 3), torch.tensor([0, 1, 2, 0, 1]), 1) == 0.0


def brute_recall(sim, k):
    """One caption per image, caption i belongs to image i; ties count against the query."""
    n = sim.shape[0]
    i2t = sum(sum(sim[i, j] >= sim[i, i] for j in range(n) if j != i) < k for i in range(n)) / n
    t2i = sum(sum(sim[i, j] >= sim[j, j] for i in range(n) if i != j) < k for j in range(n)) / n
    return i2t, t2i


def test_multilingual_recall_per_language_matches_brute_force():
    model = TableModel(dim=3, seed=5)
    rng = np.random.default_rng(4)
    images = F.normalize(torch.tensor(rng.normal(size=(8, 3))), dim=-1).float()
    valid = torch.tensor([True] * 7 + [False])  # the last image is unreadable: never scored
    captions = {"en": [f"en {i}" for i in range(8)], "de": [f"de {i}" if i % 3 else None for i in range(8)]}
    got = multilingual_metrics(model, images, valid, captions)
    for lang in captions:
        rows = [i for i, c in enumerate(captions[lang]) if c and bool(valid[i])]
        texts = np.array([model.vector(captions[lang][i]) for i in rows])
        texts /= np.linalg.norm(texts, axis=1, keepdims=True)
        sim = images[rows].double().numpy() @ texts.T
        for k in (1, 5, 10):
            i2t, t2i = brute_recall(sim, k)
            assert abs(got[f"{lang}:image_to_text_R@{k}"] - i2t) < 1e-9
            assert abs(got[f"{lang}:text_to_image_R@{k}"] - t2i) < 1e-9
        assert got[f"{lang}:images"] == len(rows)
    assert got["languages"] == 2
    assert abs(got["mean:image_to_text_R@1"] - (got["en:image_to_text_R@1"] + got["de:image_to_text_R@1"]) / 2) < 1e-12


def reference_loss(img, txt, scale):
    n = len(img)
    sims = scale * img @ txt.T
    total = 0.0
    for i in range(n):
        total += -(sims[i, i] - math.log(sum(math.exp(v) for v in sims[i])))
        total += -(sims[i, i] - math.log(sum(math.exp(v) for v in sims[:, i])))
    return total / (2 * n)


def test_heldout_loss_is_the_mean_over_full_batches_of_symmetric_infonce():
    rng = np.random.default_rng(6)
    img = rng.normal(size=(10, 4))
    txt = rng.normal(size=(10, 4))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    got = batched_contrastive_loss(torch.tensor(img), torch.tensor(txt), 7.0, batch_size=4)
    expected = (reference_loss(img[:4], txt[:4], 7.0) + reference_loss(img[4:8], txt[4:8], 7.0)) / 2  # last 2 dropped
    assert abs(got - expected) < 1e-5
    same = F.normalize(torch.ones(8, 3), dim=-1)
    assert abs(batched_contrastive_loss(same, same, 10.0, 8) - math.log(8)) < 1e-6


def test_pairs_skip_unreadable_images_and_are_reproducible():
    captions = [["a", "b"], ["c"], [], ["d"], ["e", "f", "g"]]
    valid = torch.tensor([True, False, True, True, True])
    rows, texts = choose_pairs(captions, valid, 10, seed=0)
    assert sorted(rows) == [0, 3, 4]
    assert all(t in captions[r] for r, t in zip(rows, texts))
    assert (rows, texts) == choose_pairs(captions, valid, 10, seed=0)
