"""STAND-IN (helper B, issue 15) until helper A's real `split_pairs` lands: same signature and contract.

The run's held-out validation pairs: a pair is held out when sha1("locktune-validation:" + its image key),
read as a number in [0, 1), is below `fraction` — a stable choice, independent of train.seed.  Of the rest,
`max_train_pairs` (0 = all) are trained on: the ones with the smallest hashes, kept in data order, so the
1,000-pair subset is inside the 3,000-pair subset.
"""

from __future__ import annotations

import hashlib

from locktune.data.images import SubsetImages
from locktune.data.pairs import PairSet

SALT = "locktune-validation:"


def pair_hash(identity: str) -> float:
    """A pair's place in [0, 1) from its identity (its image key)."""
    digest = hashlib.sha1((SALT + identity).encode("utf-8", "surrogateescape")).hexdigest()
    return int(digest, 16) / 16 ** len(digest)


def _subset(pairs: PairSet, rows: list[int], name: str) -> PairSet:
    return PairSet(f"{pairs.name}:{name}", SubsetImages(pairs.images, rows), [pairs.captions[i] for i in rows])


def split_pairs(pairs: PairSet, fraction: float, max_train_pairs: int = 0) -> tuple[PairSet, PairSet]:
    """(training pairs, validation pairs), each in data order."""
    hashes = [pair_hash(key) for key in pairs.images.keys]
    held = [i for i, h in enumerate(hashes) if h < fraction]
    train = [i for i, h in enumerate(hashes) if h >= fraction]
    if 0 < max_train_pairs < len(train):
        chosen = set(sorted(train, key=lambda i: hashes[i])[:max_train_pairs])
        train = [i for i in train if i in chosen]
    return _subset(pairs, train, "train"), _subset(pairs, held, "validation")
