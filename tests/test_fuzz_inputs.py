"""Property-based tests (hypothesis) over captions, tokenizer inputs and data records, and the checked-in
corpus of broken images: every input is either used or skipped and counted, never a crash."""

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from locktune.data.pairs import clean_caption
from locktune.data.sources.openclipart import captions_for, parse_svg_metadata
from locktune.train.batches import BatchPlan

CORPUS = Path(__file__).parent / "fuzz" / "images"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
any_text = st.text(alphabet=st.characters(), max_size=3000)


@pytest.fixture(scope="module")
def clip_tower():
    from locktune.towers.text.base import TextTowerArgs
    from locktune.towers.text.clip_transformer import ClipTextTower

    return ClipTextTower(TextTowerArgs(pretrained=False, max_len=16, width=32, layers=1, heads=2, vocab_size=300,
                                       corpus=lambda: ["a red apple", "ein Hund", "猫の絵", "🙂 smiling face"] * 5))


@pytest.fixture(scope="module")
def minilm_tower():
    from locktune.towers.text.base import TextTowerArgs
    from locktune.towers.text.minilm import build_minilm

    return build_minilm(TextTowerArgs(pretrained=True, max_len=16))


@FAST
@given(st.lists(any_text, min_size=1, max_size=8))
@example(["\ud800", "bad \udcff byte"])  # lone surrogates, as `surrogateescape` decoding leaves them
def test_clip_tokenizer_takes_any_unicode(clip_tower, texts):
    tokens = clip_tower.tokenize(texts)
    assert tokens["ids"].shape == (len(texts), 16) and tokens["mask"].shape == (len(texts), 16)
    lengths = tokens["mask"].sum(1)
    assert bool(((lengths >= 2) & (lengths <= 16)).all())  # start and end tokens always there
    assert bool((tokens["ids"][:, 0] == clip_tower.sos_id).all())
    assert bool((tokens["ids"][torch.arange(len(texts)), lengths - 1] == clip_tower.eos_id).all())
    with torch.no_grad():
        assert torch.isfinite(clip_tower(tokens["ids"], tokens["mask"])).all()


@FAST
@given(st.lists(any_text, min_size=1, max_size=8))
@example(["\ud800", "bad \udcff byte"])
def test_minilm_tokenizer_takes_any_unicode(minilm_tower, texts):
    tokens = minilm_tower.tokenize(texts)
    assert tokens["ids"].shape == (len(texts), 16)
    assert bool((tokens["mask"].sum(1) >= 2).all())  # [CLS] ... [SEP] even for empty or unknown text


@given(any_text)
def test_clean_caption_is_idempotent_and_tidy(text):
    cleaned = clean_caption(text)
    assert clean_caption(cleaned) == cleaned
    assert "_" not in cleaned and "  " not in cleaned and cleaned == cleaned.strip()


@settings(max_examples=200, deadline=None)
@given(any_text, st.lists(any_text, max_size=5), any_text)
def test_svg_metadata_parser_never_raises(title, keywords, description):
    svg = ("<svg><metadata><cc:Work><dc:title>" + title + "</dc:title><dc:description>" + description
           + "</dc:description><dc:subject><rdf:Bag>" + "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
           + "</rdf:Bag></dc:subject></cc:Work></metadata></svg>")
    parsed_title, parsed_keywords, parsed_description = parse_svg_metadata(svg)
    for caption in captions_for(parsed_title, parsed_keywords, parsed_description, "folder"):
        assert isinstance(caption, str) and caption


@given(any_text)
def test_svg_metadata_parser_on_garbage(text):
    title, keywords, description = parse_svg_metadata(text)
    assert isinstance(title, str) and isinstance(description, str) and isinstance(keywords, list)
    # Garbage holds no metadata: a field is only ever read from between its own tags.
    assert title == "" or "<dc:title>" in text
    assert description == "" or "<dc:description>" in text
    assert keywords == [] or ("<dc:subject>" in text and "<rdf:li>" in text)


plain = st.text(alphabet=st.characters(blacklist_characters="<>&", blacklist_categories=("Cs",)), max_size=80)
word = st.from_regex(r"k[a-z]{1,7}( [a-z]{2,8})?", fullmatch=True)  # never one of the dropped words ("clip art", ...)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), plain, st.lists(word, max_size=6), plain)
def test_svg_metadata_fields_come_back_from_around_garbage(garbage, title, keywords, description):
    """Markup-free fields in a work block after garbage come back as written (cleaned): the garbage before
    it is not read, even when it holds tags of its own."""
    from hypothesis import assume

    assume("<cc:Work" not in garbage)
    svg = (garbage + "<dc:title>decoy</dc:title><svg><metadata><cc:Work rdf:about=''><dc:title>" + title
           + "</dc:title><dc:subject><rdf:Bag>" + "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
           + "</rdf:Bag></dc:subject><dc:description>" + description + "</dc:description></cc:Work></metadata></svg>")
    # What each field should be, by hand: whitespace runs collapsed to one space, ends stripped
    # (clean_caption's rule), keywords kept in order.
    tidy = lambda text: " ".join(text.replace("_", " ").split())  # noqa: E731
    assert parse_svg_metadata(svg) == (tidy(title), keywords, tidy(description))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=4, max_size=60), st.integers(1, 4), st.integers(0, 1000),
       st.integers(0, 50))
def test_batch_plan_covers_each_pair_once_per_epoch(caption_counts, batch, seed, epoch):
    if len(caption_counts) < batch:
        with pytest.raises(ValueError):
            BatchPlan(caption_counts, batch, seed)
        return
    plan = BatchPlan(caption_counts, batch, seed)
    seen = []
    for step in range(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch):
        pairs, captions = plan.batch(step)
        assert bool((captions < torch.tensor(caption_counts)[pairs]).all())
        seen += pairs.tolist()
    assert len(seen) == len(set(seen)) == plan.steps_per_epoch * batch


def test_broken_image_corpus_is_skipped_and_counted_exactly():
    from locktune.cache.embedding_cache import compute_features
    from locktune.data.images import FileImages
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    files = sorted(CORPUS.iterdir())
    expected_bad = {f.name for f in files if f.name.startswith("bad_")}
    assert len(expected_bad) == 8 and len(files) - len(expected_bad) == 9
    tower = build_image_tower("mobilenet_v2", pretrained=True)
    features, failed = compute_features(tower, preprocess_for(tower, 32), FileImages(files), batch_size=5, workers=0)
    assert {Path(k).name for k in failed} == expected_bad
    valid = ~torch.isnan(features).any(1)
    assert [f.name for f, ok in zip(files, valid) if ok] == [f.name for f in files if f.name.startswith("ok_")]
