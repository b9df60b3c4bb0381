"""Benchmarks without the images that are near-duplicates of a training image: `NAME_clean` for each
benchmark in CHECKED, with `excluded` saying how many were dropped.

A benchmark image is dropped when its perceptual hash is within `near_duplicates.THRESHOLD` bits of an
image of a training source (TRAINING_SOURCES, the default pair sources), mirrored or not, and their colour
thumbnails are within `near_duplicates.MAX_RMS`.  `drop_list(NAME)` gives the indices, the `excluded` of
`get_benchmark("NAME_clean")` their count (the README's "Held-out hygiene" counts).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from locktune.data.images import SubsetImages
from locktune.data.near_duplicates import MAX_RMS, THRESHOLD, matches, signatures
from locktune.data.pairs import load_pairs, take_evenly
from locktune.eval.benchmarks.base import (BENCHMARKS, Benchmark, ClassificationSet, MultilingualRetrievalSet,
                                           RetrievalSet, balanced_subset, get_benchmark)

TRAINING_SOURCES = ("openclipart", "emoji")
CHECKED = ("tuxpaint_categories", "tuxpaint_retrieval", "tuxpaint_multilingual", "tuxpaint_multilingual_half_b",
           "openmoji_groups", "fashion_mnist", "animal_mnist", "mnist", "sklearn_digits")
SUFFIX = "_clean"


@lru_cache(maxsize=None)
def training_signatures(sources: tuple[str, ...] = TRAINING_SOURCES) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, thumbnails) of every image of the training sources, in source order."""
    parts = [signatures(load_pairs([s]).images) for s in sources]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def drop_list(name: str, threshold: int = THRESHOLD, max_rms: float = MAX_RMS,
              sources: tuple[str, ...] = TRAINING_SOURCES) -> list[int]:
    """Indices (in the full benchmark) of the images to drop: near-duplicates of a training image."""
    return matches(signatures(get_benchmark(name).images), training_signatures(sources), threshold, max_rms)


def without(benchmark: Benchmark, drop: list[int], max_images: int) -> Benchmark:
    """The benchmark less the `drop` indices, then at most `max_images` of the rest (classes balanced for a
    labelled set, evenly spread otherwise), named NAME_clean, with `excluded` = len(drop)."""
    dropped = set(drop)
    rest = [i for i in range(len(benchmark.images)) if i not in dropped]
    name = benchmark.name + SUFFIX
    if isinstance(benchmark, ClassificationSet):
        labels = [benchmark.labels[i] for i in rest]
        keep = [rest[j] for j in balanced_subset(labels, max_images)]
        return ClassificationSet(name, SubsetImages(benchmark.images, keep), [benchmark.labels[i] for i in keep],
                                 benchmark.class_names, benchmark.templates, benchmark.imagenet_indices,
                                 excluded=len(dropped))
    keep = [rest[j] for j in take_evenly(len(rest), max_images)]
    if isinstance(benchmark, RetrievalSet):
        return RetrievalSet(name, SubsetImages(benchmark.images, keep), [benchmark.captions[i] for i in keep],
                            excluded=len(dropped))
    return MultilingualRetrievalSet(name, SubsetImages(benchmark.images, keep),
                                    {lang: [column[i] for i in keep] for lang, column in benchmark.captions.items()},
                                    excluded=len(dropped))


def _register(base: str) -> None:
    @BENCHMARKS.register(base + SUFFIX)
    def clean(max_images: int = 0) -> Benchmark:
        return without(get_benchmark(base), drop_list(base), max_images)
    clean.__doc__ = f"`{base}` without its near-duplicates of training images ({', '.join(TRAINING_SOURCES)})."


for _name in CHECKED:
    _register(_name)
