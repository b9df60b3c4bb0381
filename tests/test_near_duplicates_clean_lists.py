"""The version-2 drop lists of the clean Tux Paint benchmarks (`eval/benchmarks/clean.py`): training
captions matched after normalising, the committed lists checked against the installed benchmarks and the
labelled check set, and the switch (LISTS_VERSION) that keeps the committed records' clean sets."""

import json

import pytest

from locktune.data.images import FileImages
from locktune.errors import LocktuneError
from locktune.eval.benchmarks import MultilingualRetrievalSet, RetrievalSet, get_benchmark
from locktune.eval.benchmarks import clean
from test_near_duplicates import _tiny_classification


@pytest.mark.parametrize("text,expected", [("A duck.", "duck"), ("Teddy bear.", "teddy bear"), ("7", "7"),
                                           ("The  Big_Apple!", "big apple"), ("an owl", "owl"),
                                           ("Anteater", "anteater"), ("A", "a")])
def test_normalise_caption(text, expected):
    assert clean.normalise_caption(text) == expected


def test_same_caption_list_on_retrieval_and_multilingual_sets(tmp_path):
    images = _tiny_classification(tmp_path).images
    training = [["A duck."], ["Teddy bear", "a toy"], ["Seven."]]
    retrieval = RetrievalSet("r", images, [["the duck"], ["A bear."], ["TEDDY BEAR!"], ["Duck soup"], ["seven"]])
    assert clean.same_caption_list(retrieval, training) == {0: "the duck", 2: "TEDDY BEAR!", 4: "seven"}
    multilingual = MultilingualRetrievalSet("m", images, {"en": ["a toy", None, "x", "y", "z"],
                                                          "de": ["Ente", "duck", None, None, None]})
    assert clean.same_caption_list(multilingual, training) == {0: "a toy"}  # English column only


def _lists(tmp_path, name, fingerprint, indices):
    path = tmp_path / "lists.json"
    path.write_text(json.dumps({"version": 2, "benchmarks": {name: {
        "fingerprint": fingerprint, "images": 950, "dropped": [{"index": i, "why": "reframed"} for i in indices]}}}))
    return path


def test_version_2_applies_the_committed_list_and_checks_the_fingerprint(tmp_path, monkeypatch):
    full = get_benchmark("tuxpaint_categories")
    monkeypatch.setattr(clean, "committed_lists", lambda path=None: json.loads(
        _lists(tmp_path, "tuxpaint_categories", full.fingerprint(), [0, 5, 7]).read_text()))
    monkeypatch.setattr(clean, "drop_list", lambda name, **kw: [1, 2])  # version 1: computed (stand-in)
    assert clean.LISTS_VERSION == 2  # the committed lists are the ones applied
    monkeypatch.setattr(clean, "LISTS_VERSION", 1)
    assert clean.applied_drop("tuxpaint_categories", full) == [1, 2]  # version 1: computed
    monkeypatch.setattr(clean, "LISTS_VERSION", 2)
    out = get_benchmark("tuxpaint_categories_clean")
    assert out.excluded == 3 and len(out.images) == len(full.images) - 3
    assert not {full.images.keys[i] for i in (0, 5, 7)} & set(out.images.keys)
    assert clean.drop_record("tuxpaint_categories_clean".removesuffix("_clean")) == {
        "lists_version": 2, "fingerprint": full.fingerprint(), "dropped": [0, 5, 7]}
    assert clean.applied_drop("mnist", None) == [1, 2]  # a benchmark without a committed list: computed
    monkeypatch.setattr(clean, "committed_lists", lambda path=None: json.loads(
        _lists(tmp_path, "tuxpaint_categories", "0123abcd", [0]).read_text()))
    with pytest.raises(LocktuneError, match="made for benchmark fingerprint 0123abcd.*make_clean_lists.py"):
        clean.applied_drop("tuxpaint_categories", full)
    with pytest.raises(LocktuneError, match="version 3: valid versions are 1 and 2"):
        clean.applied_drop("tuxpaint_categories", full, version=3)


@pytest.mark.slow  # loads the four Tux Paint benchmarks, multilingual ones included: ~30 s on 2 busy cores
def test_committed_lists_match_the_installed_benchmarks_and_the_check_set():
    lists = clean.committed_lists()
    assert lists["version"] == 2 and set(lists["benchmarks"]) == set(clean.LISTED)
    for name, entry in lists["benchmarks"].items():
        benchmark = get_benchmark(name)
        assert entry["fingerprint"] == benchmark.fingerprint() and entry["images"] == len(benchmark.images)
        keys = [str(k) for k in benchmark.images.keys]
        assert all(keys[row["index"]] == row["image"] for row in entry["dropped"]), name
        if isinstance(benchmark, RetrievalSet):  # every caption drop recomputed from the record itself
            for row in entry["dropped"]:
                if row["why"] == "caption":
                    assert row["caption"] in benchmark.captions[row["index"]]
    categories = lists["benchmarks"]["tuxpaint_categories"]["dropped"]
    why = [row["why"] for row in categories]
    assert why.count("whole-canvas") >= 30 and why.count("reframed") >= 40  # issue 29: ~50 more re-framed stamps
    check = json.loads((clean.LISTS_FILE.parent / "near_duplicate_check_set.json").read_text())["pairs"]
    dropped = {row["image"] for row in categories}
    stamps = {str(k) for k in get_benchmark("tuxpaint_categories").images.keys}
    positives = {"/usr/share/tuxpaint/stamps/" + p["stamp"] for p in check if p["same_picture"]} & stamps
    negatives = {"/usr/share/tuxpaint/stamps/" + p["stamp"] for p in check if not p["same_picture"]} & stamps
    assert len(positives & dropped) >= 0.95 * len(positives)
    assert not (negatives - positives) & {row["image"] for row in categories if row["why"] == "reframed"}
