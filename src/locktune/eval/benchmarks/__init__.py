"""Evaluation benchmarks by name.  None of them is ever a training source."""

from locktune.eval.benchmarks.base import (BENCHMARKS, LOCAL_BENCHMARKS, ClassificationSet, MultilingualRetrievalSet,
                                           RetrievalSet, check_benchmark_name, get_benchmark)
from locktune.eval.benchmarks import (  # noqa: F401  (registers)
    digits, foolbox_samples, imagenet_local, mnist_like, openmoji, tuxpaint, user_data, vtab_local)
from locktune.eval.benchmarks import clean  # noqa: F401,E402  (registers NAME_clean for the benchmarks above)

__all__ = ["BENCHMARKS", "LOCAL_BENCHMARKS", "ClassificationSet", "MultilingualRetrievalSet", "RetrievalSet",
           "check_benchmark_name", "get_benchmark"]
