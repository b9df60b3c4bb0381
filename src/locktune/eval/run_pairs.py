"""The run's own pairs split as its training split them (`data.validation_fraction`, `data.max_train_pairs`):
what it trained on and what it held out.  Read from the run's DataConfig, so a config from before those
keys existed (or any object with `sources` and `max_pairs_per_source`) reads as "nothing held out"."""

from __future__ import annotations

from locktune.data.pairs import PairSet, load_pairs


def validation_fraction(data) -> float:
    return float(getattr(data, "validation_fraction", 0.0) or 0.0)


def max_train_pairs(data) -> int:
    return int(getattr(data, "max_train_pairs", 0) or 0)


def splits_pairs(data) -> bool:
    """Whether the run trained on a part of its sources' pairs rather than all of them."""
    return validation_fraction(data) > 0 or max_train_pairs(data) > 0


def split_run_pairs(data) -> tuple[PairSet, PairSet]:
    """(training pairs, validation pairs) of the run, each in data order."""
    from locktune.data.validation_split import split_pairs

    pairs = load_pairs(list(data.sources), data.max_pairs_per_source)
    return split_pairs(pairs, validation_fraction(data), max_train_pairs(data))
