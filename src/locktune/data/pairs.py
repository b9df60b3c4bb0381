"""Image-text pairs: one image, several captions.  Pair sources are registered by name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from locktune.data.images import ConcatImages, ImageSet
from locktune.errors import LocktuneError
from locktune.registry import Registry


@dataclass
class PairSet:
    name: str
    images: ImageSet
    captions: list[list[str]]  # captions[i] belong to images[i]; at least one each
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records the source left out

    def __post_init__(self):
        if len(self.captions) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.captions)} caption lists")

    def __len__(self) -> int:
        return len(self.captions)


PAIR_SOURCES: Registry[Callable[[int], PairSet]] = Registry("pair source")
# Sources named by a path: "KIND:PATH", or a bare path whose shape picks the kind (see data/sources/paths.py).
PATH_SOURCES: Registry[Callable[[str, int], PairSet]] = Registry("path pair source")


def clean_caption(text: str) -> str:
    """Collapse whitespace and underscores; captions are otherwise kept as written."""
    return re.sub(r"\s+", " ", text.replace("_", " ")).strip()


def load_pairs(names: list[str], max_pairs_per_source: int = 0) -> PairSet:
    """The named sources, concatenated in order."""
    import locktune.data.sources  # noqa: F401  (registers the built-in sources)

    from locktune.data.sources.paths import path_source

    sets = []
    for name in names:
        by_path = path_source(name) if name not in PAIR_SOURCES else None
        sets.append(by_path[0](by_path[1], max_pairs_per_source) if by_path
                    else PAIR_SOURCES.get(name)(max_pairs_per_source))
    for s in sets:
        if len(s) == 0:
            raise LocktuneError(f"pair source '{s.name}' yielded no pairs")
    if len(sets) == 1:
        return sets[0]
    skipped: dict[str, int] = {}
    for s in sets:
        for reason, count in s.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    return PairSet("+".join(names), ConcatImages([s.images for s in sets]), [c for s in sets for c in s.captions],
                   skipped)


def take_evenly(count: int, limit: int) -> list[int]:
    """`limit` indices spread evenly over range(count) (all of them when limit is 0 or >= count)."""
    if limit <= 0 or limit >= count:
        return list(range(count))
    step = count / limit
    return [int(i * step) for i in range(limit)]
