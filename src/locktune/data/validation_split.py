"""The in-distribution validation split and the nested training subset, both fixed by the pairs alone.

Which pairs are held out is decided per pair by a salted SHA-1 of its identity, never by `train.seed` or by
position, so every seed and every tower setting holds out the same pairs, a pair's side does not change
when other pairs are added or removed, and training never sees a validation pair.  The training subset
(`max_train_pairs`) orders the remaining pairs by a second, differently salted hash and keeps the first N,
so the 1,000-pair subset lies inside the 3,000-pair one and is the same for every seed and arm.

A pair's identity is its image key with the folder the data are installed in left out (the last three
path components of a file path: `google/64/1f600.png`), so the split is the same on every machine whatever
the npm prefix or cache root; keys that are not paths (`name#row`, `name:index`) are used as they are.
Two pairs sharing an identity simply land on the same side.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import PurePath

import numpy as np

from locktune.data.images import SubsetImages
from locktune.data.pairs import PairSet

VALIDATION_SALT = "locktune-validation:"
SUBSET_SALT = "locktune-train-subset:"
IDENTITY_COMPONENTS = 3  # path components of a file key kept in its identity


def pair_identity(key: str) -> str:
    """The location-free identity of an image key (see the module docstring)."""
    if os.path.isabs(key) or "/" in key or "\\" in key:
        parts = PurePath(key).parts
        return "/".join(parts[-IDENTITY_COMPONENTS:])
    return key


def unit_hash(salt: str, identity: str) -> float:
    """A number in [0, 1) from SHA-1 of salt + identity: stable across processes, machines and Python
    versions (unlike `hash()`)."""
    digest = hashlib.sha1((salt + identity).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def validation_mask(pairs: PairSet, fraction: float) -> np.ndarray:
    """True for the pairs held out for validation: those whose hash falls below `fraction`."""
    if fraction <= 0:
        return np.zeros(len(pairs), dtype=bool)
    return np.fromiter((unit_hash(VALIDATION_SALT, pair_identity(k)) < fraction for k in pairs.images.keys),
                       dtype=bool, count=len(pairs))


def subset_order(pairs: PairSet, indices: np.ndarray) -> np.ndarray:
    """`indices` sorted by the subset hash (ties by index): the first N of it are the N-pair subset."""
    keys = pairs.images.keys
    scores = np.fromiter((unit_hash(SUBSET_SALT, pair_identity(keys[i])) for i in indices), dtype=np.float64,
                         count=len(indices))
    return indices[np.lexsort((indices, scores))]


def take_pairs(pairs: PairSet, indices, name: str) -> PairSet:
    """A PairSet of some of `pairs`, in the given order; its images are a `SubsetImages` of the source set
    (so the embedding cache of the whole source set serves it, `train/images.py`)."""
    indices = [int(i) for i in indices]
    return PairSet(name, SubsetImages(pairs.images, indices), [pairs.captions[i] for i in indices],
                   dict(pairs.skipped))


def split_pairs(pairs: PairSet, fraction: float, max_train_pairs: int = 0) -> tuple[PairSet, PairSet]:
    """(training pairs, validation pairs).  Both keep the source's order, except that with
    `max_train_pairs` the training pairs are the first N in the subset hash's order (so nested); the
    skipped-record counts of the source travel with both."""
    held = validation_mask(pairs, fraction)
    train = np.flatnonzero(~held)
    if max_train_pairs and max_train_pairs < len(train):
        train = np.sort(subset_order(pairs, train)[:max_train_pairs])
    return (take_pairs(pairs, train, f"{pairs.name}[train]"),
            take_pairs(pairs, np.flatnonzero(held), f"{pairs.name}[validation]"))
