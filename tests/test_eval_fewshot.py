"""Few-shot least squares against scikit-learn's Ridge and numpy's lstsq, and its split and shot rules."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from locktune.eval.fewshot import draw_split, fewshot_accuracy, fewshot_metrics, ridge_fit, standardise, targets


@pytest.mark.parametrize("n, d", [(40, 7), (6, 30)])  # primal (N >= D) and dual (N < D) branches
def test_ridge_fit_matches_sklearn_and_lstsq(n, d):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
    for l2 in (0.01, 1.0, 50.0):
        w = ridge_fit(x, y, l2)
        sk = Ridge(alpha=l2, fit_intercept=False, solver="cholesky").fit(x, y).coef_.T
        assert np.allclose(w, sk, atol=1e-8)
        # Ridge as ordinary least squares on the system stacked with sqrt(l2) * I.
        stacked_x = np.vstack([x, np.sqrt(l2) * np.eye(d)])
        stacked_y = np.vstack([y, np.zeros((d, 3))])
        assert np.allclose(w, np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0], atol=1e-8)


def test_standardise_uses_training_statistics_and_appends_bias():
    train = np.array([[1.0, 10.0], [3.0, 30.0]])
    other = np.array([[2.0, 50.0]])
    x_train, x_other = standardise(train, other)
    assert x_train.shape == (2, 3) and np.all(x_train[:, 2] == 100.0)
    assert np.allclose(x_other[0, :2], [(2 - 2) / (1 + 1e-5), (50 - 20) / (10 + 1e-5)])
    assert np.array_equal(targets(np.array([1, 0]), 3), [[-1, 1, -1], [1, -1, -1]])


def test_split_draws_shots_per_class_and_keeps_sets_disjoint():
    labels = np.repeat(np.arange(4), 9)
    train, val, test = draw_split(labels, 5, np.random.default_rng(3))
    assert np.array_equal(np.bincount(labels[train]), [5] * 4)
    assert len(set(train) | set(val) | set(test)) == len(train) + len(val) + len(test) == 36


def test_separable_classes_are_learned_and_unaffordable_shots_are_skipped():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 12)
    features = rng.normal(size=(36, 6)) * 0.1
    features[np.arange(36), labels] += 3.0  # class c lights up feature c
    accuracy, l2 = fewshot_accuracy(features, labels, 5, seed=0)
    assert accuracy == 1.0 and l2 > 0
    metrics = fewshot_metrics(features, labels, shot_counts=(1, 5, 10, 25), seeds=(0, 1))
    assert metrics["1shot_top1"] > 0.5 and metrics["5shot_top1"] == 1.0 and metrics["5shot_top1_std"] == 0.0
    assert "10shot_top1" in metrics and "25shot_top1" not in metrics  # 12 per class: 25 + 2 do not fit
    assert metrics["chance_top1"] == pytest.approx(1 / 3)
