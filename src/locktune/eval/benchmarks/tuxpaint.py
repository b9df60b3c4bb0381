"""Tux Paint stamps (Debian `tuxpaint-stamps-default`): photo cut-outs and drawings, each with a sentence.

`X.txt` beside `X.png`/`X.svg` holds the English sentence on its first line, then `LANG.utf8=...` lines.
The top-level folder is one of 16 categories, used for zero-shot classification.  The translations give
multilingual retrieval: every language with a sentence for more than half of the stamps is evaluated.
"""

from __future__ import annotations

from pathlib import Path

from locktune.data.images import FileImages
from locktune.data.packages import debian_path
from locktune.data.pairs import clean_caption, take_evenly
from locktune.eval.benchmarks.base import (BENCHMARKS, ClassificationSet, MultilingualRetrievalSet, RetrievalSet,
                                           balanced_subset)
from locktune.eval.templates import GENERAL

STAMPS = "/usr/share/tuxpaint/stamps"
# Folder name -> the class name the prompts use.
CATEGORY_NAMES = {
    "animals": "animal", "clothes": "piece of clothing", "food": "food", "hobbies": "toy or hobby item",
    "household": "household object", "medical": "medical item", "military": "military object",
    "naturalforces": "weather or natural force", "people": "person", "plants": "plant",
    "seasonal": "holiday decoration", "space": "space object", "sports": "sports equipment", "symbols": "symbol",
    "town": "building", "vehicles": "vehicle",
}


def stamps() -> list[tuple[Path, str, str]]:
    """(image path, English sentence, category folder) for every stamp with an image and a sentence."""
    root = debian_path(STAMPS, "tuxpaint-stamps-default", "Tux Paint benchmarks")
    rows = []
    for txt in sorted(root.rglob("*.txt")):
        image = next((p for p in (txt.with_suffix(".png"), txt.with_suffix(".svg")) if p.is_file()), None)
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        english = clean_caption(lines[0]) if lines else ""
        if image is not None and english:
            rows.append((image, english, txt.relative_to(root).parts[0]))
    return rows


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


def translations(image: Path) -> dict[str, str]:
    """{language: sentence} from the `LANG.utf8=...` lines of a stamp's .txt file."""
    out = {}
    for line in image.with_suffix(".txt").read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        lang, sep, text = line.partition(".utf8=")
        if sep and clean_caption(text):
            out[lang.strip()] = clean_caption(text)
    return out


@BENCHMARKS.register("tuxpaint_multilingual")
def tuxpaint_multilingual(max_images: int = 0, min_coverage: float = 0.5) -> MultilingualRetrievalSet:
    """English plus every language that has a sentence for more than `min_coverage` of the stamps."""
    rows = stamps()
    keep = take_evenly(len(rows), max_images)
    per_stamp = [translations(rows[i][0]) for i in keep]
    languages = sorted({lang for t in per_stamp for lang in t})
    captions: dict[str, list[str | None]] = {"en": [rows[i][1] for i in keep]}
    for lang in languages:
        column = [t.get(lang) for t in per_stamp]
        if sum(c is not None for c in column) > min_coverage * len(keep) and lang not in captions:
            captions[lang] = column
    return MultilingualRetrievalSet("tuxpaint_multilingual", FileImages([rows[i][0] for i in keep]), captions)
