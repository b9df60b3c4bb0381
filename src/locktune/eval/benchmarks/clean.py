"""Benchmarks without the images that are near-duplicates of a training image: `NAME_clean` for each
benchmark in CHECKED, with `excluded` saying how many were dropped.

A benchmark image is dropped when its perceptual hash is within `near_duplicates.THRESHOLD` bits of an
image of a training source (TRAINING_SOURCES, the default pair sources), mirrored or not, and their colour
thumbnails are within `near_duplicates.MAX_RMS`.  `drop_list(NAME)` gives the indices, the `excluded` of
`get_benchmark("NAME_clean")` their count (the README's "Held-out hygiene" counts).

LISTS_VERSION says which drop lists the `_clean` benchmarks apply.  1: the matches above, computed (what
every committed record was scored on).  2: the lists committed in `assets/clean_drop_lists.json` for the
Tux Paint sets (`make_lists`): those matches, plus the same picture re-framed, scaled or mirrored
(`data.reframed_duplicates`), plus, for retrieval, every image with a caption equal to a training caption
after `normalise_caption` (dropped, not reported apart: such a sentence is a lookup of a training pair);
each list is stored with the benchmark's fingerprint and checked against it on use.  Version 2 is the one
applied (records written from 2026-12-05 on store it per `_clean` benchmark: `clean_lists_record`); records
without that entry were scored on version 1.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from locktune.data import reframed_duplicates
from locktune.data.images import SubsetImages
from locktune.data.near_duplicates import MAX_RMS, THRESHOLD, matches, signatures
from locktune.errors import LocktuneError
from locktune.data.pairs import load_pairs, take_evenly
from locktune.eval.benchmarks.base import (BENCHMARKS, Benchmark, ClassificationSet, MultilingualRetrievalSet,
                                           RetrievalSet, balanced_subset, get_benchmark)

TRAINING_SOURCES = ("openclipart", "emoji")
CHECKED = ("tuxpaint_categories", "tuxpaint_retrieval", "tuxpaint_multilingual", "tuxpaint_multilingual_half_b",
           "openmoji_groups", "fashion_mnist", "animal_mnist", "mnist", "sklearn_digits")
SUFFIX = "_clean"
LISTS_VERSION = 2  # 1: computed whole-canvas matches (records without `clean_lists`); 2: the committed lists below
LISTS_FILE = Path(__file__).resolve().parents[2] / "assets" / "clean_drop_lists.json"
LISTED = ("tuxpaint_categories", "tuxpaint_retrieval", "tuxpaint_multilingual", "tuxpaint_multilingual_half_b")
_ARTICLE = re.compile(r"^(a|an|the) ")


@lru_cache(maxsize=None)
def training_signatures(sources: tuple[str, ...] = TRAINING_SOURCES) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, thumbnails) of every image of the training sources, in source order."""
    parts = [signatures(load_pairs([s]).images) for s in sources]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def drop_list(name: str, threshold: int = THRESHOLD, max_rms: float = MAX_RMS,
              sources: tuple[str, ...] = TRAINING_SOURCES) -> list[int]:
    """Indices (in the full benchmark) of the images to drop: near-duplicates of a training image."""
    return matches(signatures(get_benchmark(name).images), training_signatures(sources), threshold, max_rms)


def normalise_caption(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed, a leading article dropped: "A duck." -> "duck"."""
    words = re.sub(r"[^\w\s]|_", " ", text.lower()).split()
    return _ARTICLE.sub("", " ".join(words))


def english_captions(benchmark: Benchmark) -> list[list[str]]:
    """Each image's English captions (a multilingual set: its "en" column)."""
    if isinstance(benchmark, MultilingualRetrievalSet):
        return [[c] if c else [] for c in benchmark.captions.get("en", [None] * len(benchmark.images))]
    if isinstance(benchmark, RetrievalSet):
        return benchmark.captions
    return [[] for _ in range(len(benchmark.images))]


def same_caption_list(benchmark: Benchmark, training_captions: list[list[str]]) -> dict[int, str]:
    """{index: the caption} of the images with a caption equal to a training caption once normalised."""
    seen = {normalise_caption(c) for captions in training_captions for c in captions}
    out = {}
    for i, captions in enumerate(english_captions(benchmark)):
        hit = next((c for c in captions if normalise_caption(c) in seen), None)
        if hit is not None:
            out[i] = hit
    return out


def make_lists(names: tuple[str, ...] = LISTED, sources: tuple[str, ...] = TRAINING_SOURCES) -> dict:
    """The version-2 drop lists (what `scripts/make_clean_lists.py` writes to LISTS_FILE): per benchmark its
    fingerprint, size and every dropped image with why (whole-canvas / reframed / caption) and what matched."""
    pairs = load_pairs(list(sources))
    reference = reframed_duplicates.signatures(pairs.images)
    keys = [str(k) for k in getattr(pairs.images, "keys", range(len(pairs.images)))]
    out = {"version": 2, "training_sources": list(sources), "detectors": {
        "near_duplicates": {"threshold": THRESHOLD, "max_rms": MAX_RMS},
        "reframed_duplicates": {"version": reframed_duplicates.VERSION}}, "benchmarks": {}}
    for name in names:
        benchmark = get_benchmark(name)
        images = [str(k) for k in getattr(benchmark.images, "keys", range(len(benchmark.images)))]
        dropped = {i: {"why": "whole-canvas"} for i in drop_list(name, sources=sources)}
        for i, j in reframed_duplicates.matches(reframed_duplicates.signatures(benchmark.images), reference).items():
            dropped.setdefault(i, {"why": "reframed", "training": keys[j]})
        for i, caption in same_caption_list(benchmark, pairs.captions).items():
            dropped.setdefault(i, {"why": "caption", "caption": caption})
        out["benchmarks"][name] = {"fingerprint": benchmark.fingerprint(), "images": len(images),
                                   "dropped": [{"index": i, "image": images[i], **dropped[i]} for i in sorted(dropped)]}
    return out


@lru_cache(maxsize=None)
def committed_lists(path: Path = LISTS_FILE) -> dict:
    """The committed version-2 lists (LISTS_FILE)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LocktuneError(f"clean drop lists {path}: cannot read ({error}); regenerate them with "
                            "python scripts/make_clean_lists.py") from error


def applied_drop(name: str, benchmark: Benchmark, version: int | None = None) -> list[int]:
    """The indices the `_clean` form of `name` drops under lists version `version` (LISTS_VERSION when None):
    version 2 reads the committed list for the Tux Paint sets, after checking the benchmark's fingerprint."""
    version = LISTS_VERSION if version is None else version
    if version not in (1, 2):
        raise LocktuneError(f"clean drop lists version {version}: valid versions are 1 and 2")
    if version == 1 or name not in LISTED:
        return drop_list(name)
    entry = committed_lists()["benchmarks"].get(name)
    if entry is None:
        raise LocktuneError(f"clean drop lists {LISTS_FILE}: no list for '{name}'; regenerate them with "
                            "python scripts/make_clean_lists.py")
    if entry["fingerprint"] != benchmark.fingerprint():
        raise LocktuneError(f"clean drop list of '{name}' was made for benchmark fingerprint {entry['fingerprint']}, "
                            f"the installed one is {benchmark.fingerprint()}: regenerate the lists with "
                            "python scripts/make_clean_lists.py")
    return [int(row["index"]) for row in entry["dropped"]]


def drop_record(name: str, version: int | None = None) -> dict:
    """What a record stores about a `_clean` benchmark: the lists version, the full benchmark's fingerprint
    and the dropped indices."""
    benchmark = get_benchmark(name)
    version = LISTS_VERSION if version is None else version
    return {"lists_version": version, "fingerprint": benchmark.fingerprint(),
            "dropped": applied_drop(name, benchmark, version)}


def clean_lists_record(benchmark_names) -> dict:
    """A record's `clean_lists`: the lists version and, for each `_clean` benchmark among `benchmark_names`,
    its `drop_record` (which images of which benchmark version were left out)."""
    cleaned = sorted({n.removesuffix(SUFFIX) for n in benchmark_names if isinstance(n, str) and n.endswith(SUFFIX)})
    return {"version": LISTS_VERSION, "benchmarks": {name: drop_record(name) for name in cleaned}}


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
        benchmark = get_benchmark(base)
        return without(benchmark, applied_drop(base, benchmark), max_images)
    clean.__doc__ = f"`{base}` without its near-duplicates of training images ({', '.join(TRAINING_SOURCES)})."


for _name in CHECKED:
    _register(_name)
