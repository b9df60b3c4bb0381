"""Two kinds of benchmark: labelled images (zero-shot classification) and captioned images (retrieval)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from locktune.data.images import ImageSet
from locktune.registry import Registry


@dataclass
class ClassificationSet:
    name: str
    images: ImageSet
    labels: list[int]
    class_names: list[str]
    templates: list[str]  # each with one "{}" for the class name


@dataclass
class RetrievalSet:
    name: str
    images: ImageSet
    captions: list[list[str]]


Benchmark = Union[ClassificationSet, RetrievalSet]
BENCHMARKS: Registry[Callable[[int], Benchmark]] = Registry("benchmark")


def get_benchmark(name: str, max_images: int = 0) -> Benchmark:
    return BENCHMARKS.get(name)(max_images)


def balanced_subset(labels: list[int], max_images: int) -> list[int]:
    """Up to max_images indices with classes as equal as possible, first ones of each class (deterministic)."""
    if max_images <= 0 or max_images >= len(labels):
        return list(range(len(labels)))
    classes = sorted(set(labels))
    per_class = {c: [i for i, l in enumerate(labels) if l == c] for c in classes}
    chosen: list[int] = []
    depth = 0
    while len(chosen) < max_images:
        for c in classes:
            if depth < len(per_class[c]) and len(chosen) < max_images:
                chosen.append(per_class[c][depth])
        depth += 1
    return sorted(chosen)
