"""Tux Paint stamps, half `a` only, as training pairs: the other half is the `tuxpaint_multilingual_half_b`
benchmark.  `tuxpaint_half_a` captions each stamp with its English sentence and every translation of it
(one image, many languages); `tuxpaint_half_a_english` with the English sentence alone.  Trained on the
same images, the two compare multilingual with English-only captions.
"""

from __future__ import annotations

from locktune.data.images import FileImages
from locktune.data.pairs import PAIR_SOURCES, PairSet, take_evenly
from locktune.data.tuxpaint_stamps import stamp_half, translations


def multilingual_captions(english: str, by_language: dict[str, str]) -> list[str]:
    """English first, then the translations by language code; a translation identical to a caption already
    there (en_GB, or a name left untranslated) is kept once, so no language weighs twice."""
    captions = [english]
    for lang in sorted(by_language):
        if by_language[lang] not in captions:
            captions.append(by_language[lang])
    return captions


def half_a_pairs(name: str, max_pairs: int, multilingual: bool) -> PairSet:
    rows = stamp_half("a")
    keep = take_evenly(len(rows), max_pairs)
    captions = [multilingual_captions(rows[i][1], translations(rows[i][0])) if multilingual else [rows[i][1]]
                for i in keep]
    return PairSet(name, FileImages([rows[i][0] for i in keep]), captions)


@PAIR_SOURCES.register("tuxpaint_half_a")
def tuxpaint_half_a(max_pairs: int = 0) -> PairSet:
    return half_a_pairs("tuxpaint_half_a", max_pairs, multilingual=True)


@PAIR_SOURCES.register("tuxpaint_half_a_english")
def tuxpaint_half_a_english(max_pairs: int = 0) -> PairSet:
    return half_a_pairs("tuxpaint_half_a_english", max_pairs, multilingual=False)
