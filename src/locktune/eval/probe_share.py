"""What the image features know, and how much of it zero-shot reaches: a logistic probe on held-out images.

The probe is the ceiling a text side could reach with these image features: a multinomial logistic regression
(scikit-learn) on standardised features, its inverse regularisation C chosen by a small cross-validation on
the probe's own training half.  The images are split in two by a stable hash of each image's key, never by a
seed, so every model, run and process scores the same held-out images whatever else it evaluates.

A probe depends only on the features, the labels and the split; every arm that reads one locked tower's
cached features gets the same answer, so its held-out predictions are kept under $LOCKTUNE_CACHE/probes,
keyed by a digest of exactly those inputs (25 arm-seeds of a study fit each benchmark's probe once).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np

from locktune.runtime.location import cache_root

C_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # standardised features: the best C sits low for ~1,000-d features
FOLDS = 3
MAX_ITER = 1000
PROBE_VERSION = 1  # part of the cache key: change it when the probe's recipe changes


def held_out_mask(keys: list[str]) -> np.ndarray:
    """[N] bool: True for the images of the held-out half.  The lowest bit of each key's SHA-256: stable
    across runs and processes, independent of the set's order and of which other images it holds."""
    return np.array([hashlib.sha256(k.encode("utf-8")).digest()[0] & 1 == 1 for k in keys], dtype=bool)


@dataclass(frozen=True)
class ProbeResult:
    predictions: np.ndarray  # [held-out rows] the probe's class for each held-out image
    c: float  # the inverse regularisation strength the cross-validation chose
    cached: bool  # read from $LOCKTUNE_CACHE/probes rather than fitted now


def _fit(train_x: np.ndarray, train_y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))
    with warnings.catch_warnings():  # a C that does not converge in MAX_ITER is still a fair candidate
        warnings.simplefilter("ignore")
        return probe.fit(train_x, train_y)


def choose_c(train_x: np.ndarray, train_y: np.ndarray, c_grid=C_GRID, folds: int = FOLDS) -> float:
    """The C with the best mean accuracy over stratified folds of the probe's training half (ties: the
    smaller C, the stronger regularisation); the held-out half is never seen."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.unique(train_y, return_counts=True)[1].min()) if len(train_y) else 0
    folds = min(folds, smallest)
    if folds < 2:  # a class with one training image: no fold can hold it out, keep the middle C
        return float(c_grid[len(c_grid) // 2])
    split = StratifiedKFold(n_splits=folds, shuffle=False)
    best_c, best = c_grid[0], -1.0
    for c in c_grid:
        scores = [float((_fit(train_x[a], train_y[a], c).predict(train_x[b]) == train_y[b]).mean())
                  for a, b in split.split(train_x, train_y)]
        if np.mean(scores) > best:
            best_c, best = c, float(np.mean(scores))
    return float(best_c)


def _key(train_x, train_y, test_x, c_grid, folds) -> str:
    digest = hashlib.sha256(json.dumps([PROBE_VERSION, list(c_grid), folds, MAX_ITER]).encode())
    for array in (train_x, train_y, test_x):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:24]


def probe_predictions(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c_grid=C_GRID,
                      folds: int = FOLDS, use_cache: bool = True) -> ProbeResult:
    """The probe's class for each row of `test_x`, fitted on (`train_x`, `train_y`) with C chosen by
    `choose_c`; read from the probe cache when these exact inputs were probed before."""
    train_x, test_x = np.asarray(train_x, dtype=np.float32), np.asarray(test_x, dtype=np.float32)
    train_y = np.asarray(train_y, dtype=np.int64)
    path = cache_root() / "probes" / f"{_key(train_x, train_y, test_x, c_grid, folds)}.json"
    if use_cache and path.is_file():
        saved = json.loads(path.read_text())
        return ProbeResult(np.asarray(saved["predictions"], dtype=np.int64), float(saved["c"]), True)
    from threadpoolctl import threadpool_limits

    # One BLAS thread: lbfgs's small matrix products lose 20-40x to thread hand-offs when torch's threads hold
    # the cores (measured: 5.8 s vs 0.28 s a fit of 100 x 1,280 features on 2 busy cores).
    with threadpool_limits(1):
        c = choose_c(train_x, train_y, c_grid, folds)
        predictions = _fit(train_x, train_y, c).predict(test_x).astype(np.int64)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"c": c, "predictions": predictions.tolist()}))
        os.replace(tmp, path)  # atomic: a concurrent run reads the whole file or none
    return ProbeResult(predictions, c, False)


def accuracy_and_recall(predictions: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1, mean per-class recall over the classes present in `labels`) of hard predictions."""
    right = predictions == labels
    recalls = [float(right[labels == c].mean()) for c in np.unique(labels)]
    return float(right.mean()), float(np.mean(recalls))
