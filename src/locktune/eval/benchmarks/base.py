"""Three kinds of benchmark: labelled images (zero-shot classification and few-shot probes), captioned
images (retrieval), and captioned images with a caption per language (multilingual retrieval).

Built-in benchmarks are registered by name; a user's local copy of a dataset is named `KIND:PATH`
(e.g. `folder:/data/pets`, `imagenet:/data/imagenet/val`), where KIND is a registered local loader.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from locktune.data.images import ImageSet
from locktune.errors import LocktuneError
from locktune.registry import Registry


@dataclass
class ClassificationSet:
    name: str
    images: ImageSet
    labels: list[int]
    class_names: list[str]
    templates: list[str]  # each with one "{}" for the class name
    # For each class, the ImageNet-1k indices it corresponds to (None: no mapping).  Lets the report show
    # the image tower's own supervised classifier beside the zero-shot numbers.
    imagenet_indices: Optional[list[list[int]]] = None
    excluded: int = 0  # images dropped as near-duplicates of training images (benchmarks/clean.py)

    def __post_init__(self):
        check_classification(self.name, self.class_names, self.labels, len(self.images))

    def fingerprint(self) -> str:
        return _digest(self.images.fingerprint(), self.labels, self.class_names, self.templates)


@dataclass
class RetrievalSet:
    name: str
    images: ImageSet
    captions: list[list[str]]
    excluded: int = 0  # images dropped as near-duplicates of training images (benchmarks/clean.py)

    def fingerprint(self) -> str:
        return _digest(self.images.fingerprint(), self.captions)


@dataclass
class MultilingualRetrievalSet:
    """captions[lang][i] is image i's caption in that language, or None where it has none."""

    name: str
    images: ImageSet
    captions: dict[str, list[Optional[str]]] = field(default_factory=dict)
    excluded: int = 0  # images dropped as near-duplicates of training images (benchmarks/clean.py)

    def fingerprint(self) -> str:
        return _digest(self.images.fingerprint(), self.captions)


Benchmark = Union[ClassificationSet, RetrievalSet, MultilingualRetrievalSet]
BENCHMARKS: Registry[Callable[[int], Benchmark]] = Registry("benchmark")
# Loaders for a user's local copy: (path, max_images) -> benchmark; named `KIND:PATH` on the command line.
LOCAL_BENCHMARKS: Registry[Callable[[Path, int], Benchmark]] = Registry("local benchmark loader")


def get_benchmark(name: str, max_images: int = 0) -> Benchmark:
    """A registered benchmark by name, or `KIND:PATH` for a local copy read by a registered loader."""
    kind, sep, path = name.partition(":")
    if sep and kind in LOCAL_BENCHMARKS:
        return LOCAL_BENCHMARKS.get(kind)(Path(path).expanduser(), max_images)
    if sep:
        raise LocktuneError(f"unknown local benchmark loader '{kind}' in '{name}'; valid: "
                            f"{', '.join(LOCAL_BENCHMARKS.names())}")
    return BENCHMARKS.get(name)(max_images)


def check_benchmark_name(name: str) -> None:
    """Fail early (before any model is loaded) on a name that no registry knows."""
    kind, sep, path = name.partition(":")
    if sep:
        LOCAL_BENCHMARKS.get(kind)
        if not Path(path).expanduser().exists():
            raise LocktuneError(f"benchmark '{name}': '{path}' does not exist")
    else:
        BENCHMARKS.get(name)


def check_classification(name: str, class_names: list[str], labels: list[int], n_images: int) -> None:
    """One-line errors for a labelled set that cannot be evaluated, naming the offending item."""
    if not class_names:
        raise LocktuneError(f"benchmark '{name}': the class list is empty")
    if len(labels) != n_images:
        raise LocktuneError(f"benchmark '{name}': {n_images} images but {len(labels)} labels")
    bad = next((label for label in labels if not 0 <= label < len(class_names)), None)
    if bad is not None:
        raise LocktuneError(f"benchmark '{name}': label {bad} is not in the class list ({len(class_names)} classes)")


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
