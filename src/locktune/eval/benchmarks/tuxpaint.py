"""Tux Paint stamps (Debian `tuxpaint-stamps-default`): photo cut-outs and drawings, each with a sentence
(read by `locktune.data.tuxpaint_stamps`).

The top-level folder is one of 16 categories, used for zero-shot classification.  The translations give
multilingual retrieval: every language with a sentence for more than half of the stamps is evaluated.
`tuxpaint_multilingual_half_b` is that on half `b` only, held out from the `tuxpaint_half_a*` training sources.
"""

from __future__ import annotations

from pathlib import Path

from locktune.data.images import FileImages
from locktune.data.pairs import take_evenly
from locktune.data.tuxpaint_stamps import stamp_half, stamps, translations
from locktune.eval.benchmarks.base import (BENCHMARKS, ClassificationSet, MultilingualRetrievalSet, RetrievalSet,
                                           balanced_subset)
from locktune.eval.templates import GENERAL

# Folder name -> the class name the prompts use.
CATEGORY_NAMES = {
    "animals": "animal", "clothes": "piece of clothing", "food": "food", "hobbies": "toy or hobby item",
    "household": "household object", "medical": "medical item", "military": "military object",
    "naturalforces": "weather or natural force", "people": "person", "plants": "plant",
    "seasonal": "holiday decoration", "space": "space object", "sports": "sports equipment", "symbols": "symbol",
    "town": "building", "vehicles": "vehicle",
}


@BENCHMARKS.register("tuxpaint_retrieval")
def tuxpaint_retrieval(max_images: int = 0) -> RetrievalSet:
    rows = stamps()
    keep = take_evenly(len(rows), max_images)
    return RetrievalSet("tuxpaint_retrieval", FileImages([rows[i][0] for i in keep]), [[rows[i][1]] for i in keep])


@BENCHMARKS.register("tuxpaint_categories")
def tuxpaint_categories(max_images: int = 0) -> ClassificationSet:
    rows = stamps()
    folders = sorted(CATEGORY_NAMES)
    labels = [folders.index(r[2]) for r in rows]
    keep = balanced_subset(labels, max_images)
    return ClassificationSet("tuxpaint_categories", FileImages([rows[i][0] for i in keep]), [labels[i] for i in keep],
                             [CATEGORY_NAMES[f] for f in folders], GENERAL)


def multilingual_set(name: str, rows: list[tuple[Path, str, str]], max_images: int,
                     min_coverage: float) -> MultilingualRetrievalSet:
    """English plus every language with a sentence for more than `min_coverage` of the kept stamps."""
    keep = take_evenly(len(rows), max_images)
    per_stamp = [translations(rows[i][0]) for i in keep]
    languages = sorted({lang for t in per_stamp for lang in t})
    captions: dict[str, list[str | None]] = {"en": [rows[i][1] for i in keep]}
    for lang in languages:
        column = [t.get(lang) for t in per_stamp]
        if sum(c is not None for c in column) > min_coverage * len(keep) and lang not in captions:
            captions[lang] = column
    return MultilingualRetrievalSet(name, FileImages([rows[i][0] for i in keep]), captions)


@BENCHMARKS.register("tuxpaint_multilingual")
def tuxpaint_multilingual(max_images: int = 0, min_coverage: float = 0.5) -> MultilingualRetrievalSet:
    """English plus every language that has a sentence for more than `min_coverage` of the stamps."""
    return multilingual_set("tuxpaint_multilingual", stamps(), max_images, min_coverage)


@BENCHMARKS.register("tuxpaint_multilingual_half_b")
def tuxpaint_multilingual_half_b(max_images: int = 0, min_coverage: float = 0.5) -> MultilingualRetrievalSet:
    """`tuxpaint_multilingual` on half `b` of the stamps only: none of the `tuxpaint_half_a*` training images."""
    return multilingual_set("tuxpaint_multilingual_half_b", stamp_half("b"), max_images, min_coverage)
