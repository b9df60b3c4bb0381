"""Image-text pairs: one image, several captions.  Pair sources are registered by name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from locktune.data.images import ConcatImages, ImageSet
from locktune.errors import LocktuneError
from locktune.registry import Registry


@dataclass
class PairSet:
    name: str
    images: ImageSet
    captions: list[list[str]]  # captions[i] belong to images[i]; at least one each

    def __post_init__(self):
        if len(self.captions) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.captions)} caption lists")

    def __len__(self) -> int:
        return len(self.captions)

    def all_captions(self) -> list[str]:
        return [c for caps in self.captions for c in caps]


PAIR_SOURCES: Registry[Callable[[int], PairSet]] = Registry("pair source")


def clean_caption(text: str) -> str:
    """Collapse whitespace and underscores; captions are otherwise kept as written."""
    return re.sub(r"\s+", " ", text.replace("_", " ")).strip()


def load_pairs(names: list[str], max_pairs_per_source: int = 0) -> PairSet:
    """The named sources, concatenated in order."""
    import locktune.data.sources  # noqa: F401  (registers the built-in sources)

    sets = [PAIR_SOURCES.get(name)(max_pairs_per_source) for name in names]
    for s in sets:
        if len(s) == 0:
            raise LocktuneError(f"pair source '{s.name}' yielded no pairs")
    if len(sets) == 1:
        return sets[0]
    return PairSet("+".join(names), ConcatImages([s.images for s in sets]), [c for s in sets for c in s.captions])


def take_evenly(count: int, limit: int) -> list[int]:
    """`limit` indices spread evenly over range(count) (all of them when limit is 0 or >= count)."""
    if limit <= 0 or limit >= count:
        return list(range(count))
    step = count / limit
    return [int(i * step) for i in range(limit)]
