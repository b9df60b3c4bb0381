"""probe_share: the hash split, the logistic probe (against scikit-learn's own grid search) and the share, with
zero-shot on the held-out half checked against the zero-shot evaluator run on those images alone."""

import hashlib

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from locktune.config import ModelConfig
from locktune.data.images import SubsetImages
from locktune.eval.benchmarks import ClassificationSet, get_benchmark
from locktune.eval.probe_share import C_GRID, held_out_mask, probe_predictions


def _hash_half(key: str) -> bool:
    return hashlib.sha256(key.encode()).digest()[0] % 2 == 1


def test_split_is_a_stable_hash_of_each_key_whatever_the_order():
    keys = [f"set:{i}" for i in range(400)]
    mask = held_out_mask(keys)
    assert mask.tolist() == [_hash_half(k) for k in keys]
    order = np.random.default_rng(0).permutation(len(keys))
    assert held_out_mask([keys[i] for i in order]).tolist() == mask[order].tolist(), "a key's half is its own"
    assert held_out_mask(keys[:50]).tolist() == mask[:50].tolist(), "other images do not move a key"
    assert 150 < mask.sum() < 250  # about half (binomial, sd 10)


def test_probe_on_linearly_separable_features_is_perfect_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path))
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 30)
    features = rng.normal(size=(120, 16)) * 0.1
    features[np.arange(120), labels] += 3.0  # class c lights up feature c
    train = rng.permutation(120)[:60]
    test = np.setdiff1d(np.arange(120), train)
    first = probe_predictions(features[train], labels[train], features[test])
    assert not first.cached and first.c in C_GRID
    assert (first.predictions == labels[test]).mean() == 1.0
    again = probe_predictions(features[train], labels[train], features[test])
    assert again.cached and again.c == first.c and np.array_equal(again.predictions, first.predictions)


def test_probe_matches_scikit_learn_grid_search(monkeypatch, tmp_path):
    """The chosen C and the held-out predictions equal GridSearchCV's over the same grid and folds."""
    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path))
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 150)
    features = rng.normal(size=(150, 10)) + 0.8 * np.eye(10)[labels]  # overlapping classes: C matters
    result = probe_predictions(features[:100], labels[:100], features[100:], use_cache=False)
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                          {"logisticregression__C": list(C_GRID)}, cv=StratifiedKFold(3)).fit(
        features[:100].astype(np.float32), labels[:100])
    assert result.c == search.best_params_["logisticregression__C"]
    assert np.array_equal(result.predictions, search.predict(features[100:].astype(np.float32)))


@pytest.fixture(scope="module")
def tiny_model():
    from locktune.model import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(setting="LU", image_tower="mobilenet_v2", image_size=64, text_tower="minilm"))


@pytest.mark.parametrize("device", ["cpu", pytest.param("fakegpu", marks=pytest.mark.slow)])
def test_share_and_held_out_zero_shot_against_the_zero_shot_evaluator(tiny_model, device):
    from locktune.eval.evaluators.probe_share import probe_share_evaluation
    from locktune.eval.evaluators.zero_shot import zero_shot_evaluation

    model = tiny_model.to(device).eval()
    digits = get_benchmark("sklearn_digits", 120)
    metrics = probe_share_evaluation(model, digits).metrics
    held = [i for i, k in enumerate(digits.images.keys) if _hash_half(k)]
    assert metrics["held_out_images"] == len(held) and metrics["probe_train_images"] == 120 - len(held)
    assert metrics["share"] == pytest.approx(metrics["zero_shot_top1"] / metrics["probe_top1"], rel=1e-12)
    assert metrics["recall_share"] == pytest.approx(
        metrics["zero_shot_mean_per_class_recall"] / metrics["probe_mean_per_class_recall"], rel=1e-12)
    assert metrics["probe_top1"] > 0.5  # ImageNet features separate digits far above chance (10%)
    # The zero-shot evaluator on a benchmark of the held-out images alone (its own image set and cache entry).
    alone = ClassificationSet("held", SubsetImages(digits.images, held), [digits.labels[i] for i in held],
                              digits.class_names, digits.templates)
    reference = zero_shot_evaluation(model, alone).metrics
    assert metrics["zero_shot_top1"] == pytest.approx(reference["top1"], abs=1e-9)
    assert metrics["zero_shot_mean_per_class_recall"] == pytest.approx(reference["mean_per_class_recall"], abs=1e-9)
    tiny_model.to("cpu")
