"""Tux Paint's stamps split in two halves: half `a` trains (multilingual or English captions), half `b` is
the held-out multilingual retrieval benchmark.  Reads the installed `tuxpaint-stamps-default`."""

from collections import Counter

import pytest

from locktune.data import near_duplicates as nd
from locktune.data.images import FileImages
from locktune.data.pairs import load_pairs
from locktune.data.tuxpaint_stamps import stamp_half, stamps, translations
from locktune.errors import LocktuneError
from locktune.eval.benchmarks import get_benchmark


@pytest.fixture(scope="module")
def halves():
    return stamp_half("a"), stamp_half("b")


def test_halves_are_disjoint_and_together_all_stamps(halves):
    a, b = halves
    everything = stamps()
    paths_a, paths_b = {r[0] for r in a}, {r[0] for r in b}
    assert not paths_a & paths_b
    assert paths_a | paths_b == {r[0] for r in everything} and len(a) + len(b) == len(everything)
    assert abs(len(a) - len(b)) <= 10 and len(b) > 400
    assert a == sorted(a) and stamp_half("a") == a, "the split depends only on the installed files"


def _stem(path):
    """Independent of the module's regex: the stem with every digit, '-' and '_' at its end stripped, and a
    single trailing letter after digits ('fireman240a')."""
    stem = path.stem.lower()
    if len(stem) > 1 and stem[-1].isalpha() and stem[-2].isdigit():
        stem = stem[:-1]
    return stem.rstrip("0123456789-_") or path.stem.lower()


def _sentence(text):
    return " ".join(text.lower().split()).rstrip(".!? ")


def test_halves_share_no_stem_no_sentence_and_no_near_duplicate(halves):
    a, b = halves
    assert not {_stem(r[0]) for r in a} & {_stem(r[0]) for r in b}
    assert not {_sentence(r[1]) for r in a} & {_sentence(r[1]) for r in b}
    # No near-duplicate picture across the halves either (the green and brown eye, a t-shirt recoloured).
    sig_a, sig_b = nd.signatures(FileImages([r[0] for r in a])), nd.signatures(FileImages([r[0] for r in b]))
    assert nd.matches(sig_b, sig_a) == []
    # The rule has something to do: the installed stamps do repeat stems and sentences.
    everything = stamps()
    assert len({_sentence(r[1]) for r in everything}) < len(everything) - 50
    assert len({_stem(r[0]) for r in everything}) < len(everything) - 20


def test_every_category_is_in_both_halves(halves):
    a, b = halves
    counts = Counter(r[2] for r in stamps())
    assert len(counts) == 16
    for category, count in counts.items():
        in_a, in_b = sum(r[2] == category for r in a), sum(r[2] == category for r in b)
        assert in_a >= 1 and in_b >= 1 and in_a + in_b == count
        assert abs(in_a - in_b) <= max(4, count // 5), category  # whole groups move, so roughly even


def test_unknown_half_is_a_clear_error():
    with pytest.raises(LocktuneError, match="valid: a, b"):
        stamp_half("c")


def test_half_a_multilingual_keeps_all_translations_with_english_first(halves):
    a, _ = halves
    pairs = load_pairs(["tuxpaint_half_a"])
    assert len(pairs) == len(a) and pairs.images.paths == [str(r[0]) for r in a]
    for (path, english, _), captions in zip(a, pairs.captions):
        assert captions[0] == english
        assert set(captions) == {english, *translations(path).values()}
        assert len(captions) == len(set(captions))
    per_image = sorted(len(c) for c in pairs.captions)
    assert per_image[len(per_image) // 2] >= 20, "most stamps have dozens of languages"


def test_half_a_english_has_one_caption_per_image(halves):
    a, _ = halves
    pairs = load_pairs(["tuxpaint_half_a_english"])
    assert pairs.captions == [[r[1]] for r in a]
    assert pairs.images.paths == load_pairs(["tuxpaint_half_a"]).images.paths


def test_max_pairs_is_respected():
    assert len(load_pairs(["tuxpaint_half_a"], max_pairs_per_source=10)) == 10
    assert len(load_pairs(["tuxpaint_half_a_english"], max_pairs_per_source=10)) == 10


def test_half_b_benchmark_is_multilingual_and_holds_no_half_a_image(halves):
    a, b = halves
    bench = get_benchmark("tuxpaint_multilingual_half_b")
    assert bench.name == "tuxpaint_multilingual_half_b"
    assert bench.images.paths == [str(r[0]) for r in b]
    assert not set(bench.images.paths) & {str(r[0]) for r in a}
    assert bench.captions["en"] == [r[1] for r in b]
    assert len(bench.captions) >= 10 and {"de", "fr", "es"} <= set(bench.captions)
    # The language rule, recomputed: a sentence for more than half of half b's stamps.
    per_stamp = [translations(r[0]) for r in b]
    for lang, column in bench.captions.items():
        assert len(column) == len(b)
        if lang != "en":
            assert column == [t.get(lang) for t in per_stamp]
            assert sum(c is not None for c in column) > len(b) / 2
    covered = Counter(lang for t in per_stamp for lang in t)
    assert {lang for lang, n in covered.items() if n > len(b) / 2} == set(bench.captions) - {"en"}


def test_half_b_benchmark_respects_max_images(halves):
    _, b = halves
    bench = get_benchmark("tuxpaint_multilingual_half_b", max_images=40)
    assert len(bench.images.paths) == 40 and all(len(c) == 40 for c in bench.captions.values())
    assert set(bench.images.paths) <= {str(r[0]) for r in b} and len(bench.captions) >= 2
