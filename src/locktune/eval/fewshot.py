"""Few-shot linear evaluation of an image representation: closed-form regularised least squares.

As big_vision's few-shot evaluator (the paper's): features standardised with the training shots'
statistics, a constant bias feature appended (large, so the bias is almost unregularised), targets
one-hot in {-1, +1}, and W = argmin |XW - Y|^2 + l2 |W|^2 solved in closed form.  The l2 strength is
picked per seed on a validation half of the images left over after drawing the shots; accuracy is
reported on the other half.  Mean and standard deviation over seeds.
"""

from __future__ import annotations

import numpy as np

BIAS_FEATURE = 100.0
L2_GRID = tuple(2.0 ** e for e in range(-4, 15, 2))


def ridge_fit(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """argmin_W |x W - y|^2 + l2 |W|^2.  Solves the smaller of the primal (D x D) and dual (N x N) systems."""
    n, d = x.shape
    if n >= d:
        return np.linalg.solve(x.T @ x + l2 * np.eye(d), x.T @ y)
    return x.T @ np.linalg.solve(x @ x.T + l2 * np.eye(n), y)


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale by the training rows' mean and std, then append the constant bias feature."""
    mean, std = train.mean(0, keepdims=True), train.std(0, keepdims=True) + 1e-5
    return [np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=BIAS_FEATURE) for x in (train,) + others]


def targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return 2.0 * np.eye(n_classes)[labels] - 1.0


def draw_split(labels: np.ndarray, shots: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: `shots` per class for training, the rest of each class halved."""
    train, val, test = [], [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        train += members[:shots].tolist()
        rest = members[shots:]
        val += rest[0::2].tolist()
        test += rest[1::2].tolist()
    return np.array(train), np.array(val), np.array(test)


def fewshot_accuracy(features: np.ndarray, labels: np.ndarray, shots: int, seed: int,
                     l2_grid=L2_GRID) -> tuple[float, float]:
    """(test accuracy, chosen l2) for one draw of `shots` images per class."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    n_classes = int(labels.max()) + 1
    train, val, test = draw_split(labels, shots, np.random.default_rng(seed))
    x_train, x_val, x_test = standardise(features[train], features[val], features[test])
    y_train = targets(labels[train], n_classes)
    best = None
    for l2 in l2_grid:
        w = ridge_fit(x_train, y_train, l2)
        accuracy = float(((x_val @ w).argmax(1) == labels[val]).mean())
        if best is None or accuracy >= best[0]:  # ties go to the stronger regularisation
            best = (accuracy, l2, w)
    _, l2, w = best
    return float(((x_test @ w).argmax(1) == labels[test]).mean()), l2


def fewshot_metrics(features: np.ndarray, labels: np.ndarray, shot_counts=(1, 5, 10, 25),
                    seeds=(0, 1, 2)) -> dict[str, float]:
    """`{k}shot_top1` (mean over seeds) and `{k}shot_top1_std` for each k that every class can afford
    (k shots plus at least one validation and one test image)."""
    features = np.asarray(features, dtype=np.float64)  # once, not once per draw (fewshot_accuracy's is then free)
    labels = np.asarray(labels)
    smallest = int(np.bincount(labels).min())
    out: dict[str, float] = {"chance_top1": 1.0 / (int(labels.max()) + 1), "seeds": len(seeds)}
    for k in shot_counts:
        if k + 2 > smallest:
            continue
        accuracies = [fewshot_accuracy(features, labels, k, seed)[0] for seed in seeds]
        out[f"{k}shot_top1"] = float(np.mean(accuracies))
        out[f"{k}shot_top1_std"] = float(np.std(accuracies))
    return out
