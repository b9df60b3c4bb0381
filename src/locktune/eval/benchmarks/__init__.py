"""Evaluation benchmarks by name.  None of them is ever a training source."""

from locktune.eval.benchmarks.base import BENCHMARKS, ClassificationSet, RetrievalSet, get_benchmark
from locktune.eval.benchmarks import mnist_like, tuxpaint  # noqa: F401  (registers)

__all__ = ["BENCHMARKS", "ClassificationSet", "RetrievalSet", "get_benchmark"]
