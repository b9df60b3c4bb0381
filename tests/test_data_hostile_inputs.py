"""Hostile and odd input, from pair sources to pixels: nothing crashes, no valid record is lost, every bad
record is counted by reason, and odd-but-valid images (EXIF rotations, 16-bit, alpha) decode to the
pixels a reference written from the format's definition gives."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from hostile_images import GREY16, RGB16, exif_upright, jpeg_with_orientation, stored_blocks, write_corpus
from locktune.data.pairs import load_pairs
from locktune.errors import LocktuneError


def png(colour=(200, 10, 10), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("hostile")
    return folder, write_corpus(folder)


# ---- images: one decoder, bounded before decoding ----------------------------------------------------

def test_hostile_image_corpus_loses_nothing_and_counts_every_bad_file_by_reason(corpus, capsys):
    """Through the embedding cache's own loop (worker process included): every ok_ file embeds, every
    bad_ file is a NaN row counted under its expected reason, no exception escapes."""
    from locktune.cache.embedding_cache import compute_features
    from locktune.data.decode import failure_reason
    from locktune.data.images import FileImages
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    folder, expected = corpus
    names = sorted(expected)
    tower = build_image_tower("mobilenet_v2", pretrained=True)
    features, failed = compute_features(tower, preprocess_for(tower, 32), FileImages([folder / n for n in names]),
                                        batch_size=8, workers=1)
    got = {Path(key).name: failure_reason(reason) for key, reason in failed.items()}
    assert got == {n: outcome for n, outcome in expected.items() if outcome != "ok"}
    valid = ~torch.isnan(features).any(1)
    kept = {n for n, ok in zip(names, valid.tolist()) if ok}
    assert kept == {n for n, outcome in expected.items() if outcome == "ok"}  # records lost: 0
    assert len(set(expected.values())) - 1 >= 4 and len(expected) >= 38  # kinds of bad input, files tried
    bad = sorted(outcome for outcome in expected.values() if outcome != "ok")
    counts = ", ".join(f"{reason}: {bad.count(reason)}" for reason in sorted(set(bad)))
    assert f"{len(bad)} of {len(names)} images could not be read and were skipped ({counts}; first:" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_model():
    from test_api import tiny_net

    from locktune.api import LitModel

    return LitModel(tiny_net())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_when_images_are_decoded(tmp_path, orientation, tiny_model):
    """Phone photos are stored sideways with an orientation tag; every decode path shows them upright:
    training pairs (files, shards), server uploads, and `encode_image` given a path or an opened PIL image."""
    from locktune.data.images import FileImages
    from locktune.data.sources.webdataset import TarImages
    from locktune.serve.uploads import read_image

    data = jpeg_with_orientation(orientation)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    reference = exif_upright(stored_blocks(), orientation)
    tar_images = TarImages(["photo"], [(str(path), 0, len(data))], ["jpg"])
    for image in (FileImages([path]).load(0), tar_images.load(0), read_image(data)):
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        assert pixels.shape == reference.shape
        assert np.abs(pixels - reference).max() <= 8  # JPEG at quality 100, 4:4:4: within a few levels
    upright = tiny_model.encode_image(Image.fromarray(np.asarray(FileImages([path]).load(0).convert("RGB"))))
    for given in (str(path), Image.open(path)):
        np.testing.assert_allclose(tiny_model.encode_image(given), upright, atol=1e-6)


def test_16bit_png_is_scaled_to_8bit_not_clipped_to_white(corpus):
    """I;16 grey: value / 257 rounded (float64 reference); 16-bit RGB: Pillow keeps the high byte, within 1."""
    from locktune.data.images import FileImages
    from locktune.towers.image.preprocess import Preprocess

    folder, _ = corpus
    to_rgb = Preprocess(image_size=8, mean=(0, 0, 0), std=(1, 1, 1)).to_rgb
    grey = np.asarray(to_rgb(FileImages([folder / "ok_grey_16bit.png"]).load(0)))
    reference = np.rint(GREY16.astype(np.float64) / 257.0)
    assert grey.shape == (10, 24, 3) and (grey == reference[..., None]).all()
    colour = np.asarray(to_rgb(FileImages([folder / "ok_rgb_16bit.png"]).load(0)), dtype=np.float64)
    assert np.abs(colour - RGB16.astype(np.float64) / 257.0).max() <= 1.0
    # Handed straight to the transform as a PIL image in mode I (as some readers give 16-bit TIFF): the same
    # tensor as the reference's 8-bit image gives.
    transform = Preprocess(image_size=24, mean=(0, 0, 0), std=(1, 1, 1))
    as_i = Image.fromarray(GREY16.astype(np.int32), "I")
    expected = transform(Image.fromarray(reference.astype(np.uint8), "L"))
    assert torch.equal(transform(as_i), expected)


def test_float_image_and_transparency_reach_8bit_rgb_on_the_background():
    from locktune.data.decode import decode_image
    from locktune.towers.image.preprocess import Preprocess

    to_rgb = Preprocess(image_size=8, mean=(0, 0, 0), std=(1, 1, 1), background=(10, 20, 30)).to_rgb
    ramp = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    buffer = io.BytesIO()
    Image.fromarray(ramp, "F").save(buffer, "TIFF")
    floats = np.asarray(to_rgb(decode_image(buffer.getvalue())))
    assert (floats[..., 0] == np.rint(ramp.astype(np.float64) * 255)).all()
    # Grey + alpha: out = alpha * grey + (1 - alpha) * background, per channel (float64 reference).
    grey, alpha = np.full((2, 3), 200, np.uint8), np.array([[0, 128, 255], [255, 64, 0]], np.uint8)
    la = Image.fromarray(np.stack([grey, alpha], axis=2), "LA")
    out = np.asarray(to_rgb(decode_image(la)), dtype=np.float64)
    a = alpha[..., None] / 255.0
    assert np.abs(out - (a * 200 + (1 - a) * np.array([10, 20, 30]))).max() <= 1.0


def test_a_thin_image_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    """1 x 20,000 px is a few hundred bytes; padded to a square it was 1.2 GB.  Refused before load()."""
    from PIL import ImageFile

    from locktune.data.decode import UnusableImage
    from locktune.data.images import FileImages

    path = tmp_path / "thin.png"
    Image.new("L", (1, 20_000), 128).save(path)
    assert path.stat().st_size < 1000
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    with pytest.raises(UnusableImage, match=r"^image too thin: '.*thin.png' is 1x20000 pixels; the long side"):
        FileImages([path]).load(0)
    assert decoded == []


def test_pad_square_never_builds_a_square_over_the_bound(monkeypatch):
    """An image handed over directly (past the decoder's checks) still allocates at most MAX_PAD_SIDE^2."""
    from locktune.towers.image import preprocess as module

    strip = Image.new("RGB", (2000, 9000), (0, 0, 255))
    sizes = []
    real_new = Image.new
    monkeypatch.setattr(module.Image, "new", lambda mode, size, *a, **k: (sizes.append(size), real_new(mode, size, *a, **k))[1])
    out = module.Preprocess(image_size=16, mean=(0, 0, 0), std=(1, 1, 1))(strip)
    assert out.shape == (3, 16, 16) and max(max(s) for s in sizes) <= module.MAX_PAD_SIDE
    # Geometry: the strip covers columns 16 * (0.5 -+ 1000 / 9000) = 6.2 .. 9.8 of the 16, centred on white.
    pixels = out.numpy().transpose(1, 2, 0)
    assert np.abs(pixels[:, 7:9] - [0, 0, 1]).max() < 0.05 and np.abs(pixels[:, :5] - 1).max() < 0.05


# ---- captions: non-strings, nested lists, BOMs, bad bytes ---------------------------------------------

def test_jsonl_captions_of_any_json_type_are_kept_or_counted_with_file_and_line(tmp_path, capsys):
    for name in [*"abcdefghijklmn", *(f"good{i}" for i in range(10))]:
        (tmp_path / f"{name}.png").write_bytes(png())
    lines = [
        b'\xef\xbb\xbf{"image": "a.png", "caption": "first line after a byte-order mark"}',
        b'{"image": "b.png", "caption": ["ok", 5]}',  # the string kept, the number counted
        b'{"image": "c.png", "caption": [null]}',
        b'{"image": "d.png", "caption": [["nested"], "kept too"]}',
        b'{"image": "e.png", "caption": 5}',
        b'{"image": "f.png", "caption": {"en": "a dict"}}',
        b'{"image": "g.png", "caption": ""}',
        b'{"image": "h.png", "caption": " \\t\\n "}',
        b'{"image": "i.png", "caption": "bad \xff\xfe bytes"}',
        b'{"image": "j.png", "caption": "' + b"x" * 5000 + b'"}',
        b'{"image": "k.png"}',
        b'{"image": "l.png", "caption": true}',
        b'{"image": "m.png", "caption": ["\\ufeffa leading BOM inside a string"]}',
        b'[1, 2, 3]',
        b'{"image": "n.png", "caption": "the last one"}',
        *(b'{"image": "good%d.png", "caption": "good %d"}' % (i, i) for i in range(10)),
    ]
    (tmp_path / "pairs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    pairs = load_pairs([str(tmp_path / "pairs.jsonl")])
    assert pairs.captions == [["first line after a byte-order mark"], ["ok"], ["kept too"],
                              ["a leading BOM inside a string"], ["the last one"]] + [[f"good {i}"] for i in range(10)]
    assert pairs.skipped == {"caption dropped: non-string caption": 2, "non-string caption": 4, "empty caption": 2,
                             "non-utf8 caption": 1, "caption too long": 1, "missing caption": 1, "unreadable row": 1}
    report = capsys.readouterr().err
    assert f"non-string caption: 4 (first at {tmp_path / 'pairs.jsonl'}:3)" in report
    assert f"unreadable row: 1 (first at {tmp_path / 'pairs.jsonl'}:14)" in report


def test_csv_with_a_byte_order_mark_and_a_huge_field_keeps_the_other_rows(tmp_path):
    for name in "abc":
        (tmp_path / f"{name}.png").write_bytes(png())
    rows = "\ufeffimage,caption\na.png,one\nb.png," + "y" * 200_000 + "\nc.png,three\n"
    (tmp_path / "pairs.csv").write_text(rows, encoding="utf-8")
    pairs = load_pairs([str(tmp_path / "pairs.csv")])
    assert pairs.captions == [["one"], ["three"]] and pairs.skipped == {"unreadable row": 1}


def test_webdataset_json_captions_that_are_not_strings_are_counted(tmp_path):
    members = [("a.png", png()), ("a.json", json.dumps({"captions": ["fine", 7, None]}).encode()),
               ("b.png", png()), ("b.json", json.dumps({"caption": 12}).encode()),
               ("c.png", png()), ("c.txt", b"\xef\xbb\xbfplain")]
    write_tar(tmp_path / "00000.tar", members)
    pairs = load_pairs([str(tmp_path / "00000.tar")])
    assert pairs.captions == [["fine"], ["plain"]]
    assert pairs.skipped == {"caption dropped: non-string caption": 2, "non-string caption": 1}


# ---- records: duplicates in a shard, unreadable folder entries ----------------------------------------

def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_key_repeated_inside_one_shard_keeps_the_first_record_and_is_counted(tmp_path, capsys):
    write_tar(tmp_path / "00000.tar", [("a.png", png((255, 0, 0))), ("a.txt", b"the first a"),
                                       ("b.png", png()), ("b.txt", b"b"),
                                       ("a.png", png((0, 0, 255))), ("a.txt", b"the second a"),
                                       ("c.png", png()), ("c.txt", b"c"),
                                       ("c.png", png()), ("c.txt", b"c again, straight after")])
    pairs = load_pairs([str(tmp_path / "00000.tar")])
    assert pairs.captions == [["the first a"], ["b"], ["c"]] and pairs.skipped == {"duplicate key": 2}
    assert np.asarray(pairs.images.load(0).convert("RGB"))[0, 0].tolist() == [255, 0, 0]
    assert f"duplicate key: 2 (first at {tmp_path / '00000.tar'}: a)" in capsys.readouterr().err


def test_folder_entries_that_cannot_be_records_are_counted(tmp_path):
    for name in "abcdef":
        (tmp_path / f"{name}.png").write_bytes(png())
        (tmp_path / f"{name}.txt").write_text(f"caption {name}")
    (tmp_path / "dir.jpg").mkdir()  # a directory named like an image
    (tmp_path / "dir.txt").write_text("its caption")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    (tmp_path / "scan.tiff").write_bytes(b"II*\0")  # a format the folder source does not take
    (tmp_path / "scan.txt").write_text("a scanned page")
    (tmp_path / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic")  # no caption, still counted
    (tmp_path / "orphan.txt").write_text("a caption whose image is missing")
    (tmp_path / "notes.md").write_text("not a record, not counted")
    (tmp_path / "a.json").write_text('{"url": "an img2dataset sidecar, not counted"}')
    (tmp_path / "sub").mkdir()  # a plain sub-folder, not counted
    pairs = load_pairs([f"folder:{tmp_path}"])
    assert pairs.captions == [[f"caption {name}"] for name in "abcdef"]
    assert pairs.skipped == {"not a file": 1, "dangling link": 1, "unsupported image format": 2, "missing image": 1}


def test_hostile_folder_end_to_end_through_the_folder_source_and_the_cache(corpus, tmp_path):
    """The whole corpus as an image folder with captions beside each file (non-UTF-8 names included):
    every file is a record, the good ones all kept, the bad ones counted by reason at embedding time."""
    from locktune.cache.embedding_cache import compute_features
    from locktune.data.decode import failure_reason
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    folder, expected = corpus
    images = tmp_path / "images"
    images.mkdir()
    for number, name in enumerate(expected):
        (images / name).write_bytes((folder / name).read_bytes())
        (images / name).with_suffix(".txt").write_text(f"a caption for file {number}")
    pairs = load_pairs([f"folder:{images}"])
    assert pairs.skipped == {} and len(pairs) == len(expected)
    tower = build_image_tower("mobilenet_v2", pretrained=True)
    features, failed = compute_features(tower, preprocess_for(tower, 32), pairs.images, batch_size=16, workers=0)
    assert {Path(k).name: failure_reason(v) for k, v in failed.items()} == {
        n: outcome for n, outcome in expected.items() if outcome != "ok"}
    assert int((~torch.isnan(features).any(1)).sum()) == sum(o == "ok" for o in expected.values())


def test_an_upload_that_is_too_thin_or_claims_too_many_pixels_is_413_not_500_or_415():
    from hostile_images import raw_png

    from locktune.serve.uploads import BadInput, read_image

    buffer = io.BytesIO()
    Image.new("L", (1, 200_000), 0).save(buffer, "PNG")
    for data, words in ((buffer.getvalue(), "1x200000 pixels"), (raw_png(200_000, 200_000, 8, 2, b"\0"), "megapixels"),
                        (raw_png(7000, 7000, 8, 0, b"\0"), "7000x7000 pixels")):
        with pytest.raises(BadInput) as refused:
            read_image(data)
        assert refused.value.status == 413 and words in refused.value.message


def test_api_refuses_a_thin_image_in_one_line(tiny_model, tmp_path):
    with pytest.raises(LocktuneError, match=r"image too thin: 20000x2 pixels; the long side may be at most 1000"):
        tiny_model.encode_image(Image.new("RGB", (20_000, 2)))
    Image.new("RGB", (2, 20_000)).save(tmp_path / "strip.png")
    with pytest.raises(LocktuneError, match=r"image too thin: '.*strip.png' is 2x20000 pixels"):
        tiny_model.encode_image(str(tmp_path / "strip.png"))


def test_cli_embed_over_hostile_images_and_captions_finishes_and_counts_everything(corpus, tmp_path, monkeypatch):
    """`locktune embed` on a JSONL manifest mixing the corpus with hostile captions (this ended in a
    traceback): exit 0, every valid image embedded, every bad record in the manifest's counts by reason."""
    from locktune.cli import main
    from locktune.towers.image import IMAGE_TOWERS

    folder, expected = corpus
    # json.dumps writes the non-UTF-8 name's undecodable bytes as \udcff escapes; read back, they name the file.
    rows = [json.dumps({"image": name, "caption": f"file {i}"}).encode() for i, name in enumerate(expected)]
    good = next(name for name, outcome in expected.items() if outcome == "ok")
    rows += [json.dumps({"image": good, "caption": caption}).encode() for caption in (["ok", 5], [None], 7, "  ")]
    (folder / "pairs.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    monkeypatch.setattr("locktune.towers.image.build_image_tower",
                        lambda name, pretrained, **options: IMAGE_TOWERS.get(name)(False))
    args = ["embed", "--sharded", str(tmp_path / "cache"), f"data.sources=['{folder / 'pairs.jsonl'}']",
            "model.image_tower=mobilenet_v2", "model.image_size=32", "data.image_workers=0"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    bad = [outcome for outcome in expected.values() if outcome != "ok"]
    assert manifest["image_failures"] == {reason: bad.count(reason) for reason in set(bad)}
    assert manifest["source_skipped"] == {"caption dropped: non-string caption": 1, "non-string caption": 2,
                                          "empty caption": 1}
    assert manifest["valid"] == sum(outcome == "ok" for outcome in expected.values())  # records lost: 0


def test_hf_dataset_null_captions_are_counted_not_a_traceback(tmp_path):
    import datasets

    rows = {"image": [{"bytes": png(), "path": None}] * 5,
            "caption": [["fine", None], [None], None, ["also fine"], ["\ufeffa BOM"]]}
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "pairs.parquet"))
    pairs = load_pairs([str(tmp_path / "pairs.parquet")])
    assert pairs.captions == [["fine"], ["also fine"], ["a BOM"]]
    assert pairs.skipped == {"caption dropped: non-string caption": 1, "non-string caption": 1, "missing caption": 1}


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
                           | st.binary(max_size=40),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(JSON_VALUES, max_size=6))
@example([5, None, ["nested"], {"a": 1}, b"\xff\xfe", "\ufeff", " \t"])
def test_caption_check_takes_any_json_value_and_keeps_only_clean_strings(values):
    """Whatever a JSONL, parquet or .json sidecar puts where captions belong: no exception, and what is kept
    is exactly the clean, non-empty, short strings among the values (an independent filter written out)."""
    from locktune.data.pairs import clean_caption
    from locktune.data.record_checks import MAX_CAPTION_CHARS, SkipCounter, check_captions

    counter = SkipCounter()
    kept, reason = check_captions(values, counter)
    expected, bad = [], 0
    for value in values:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
                continue
        if not isinstance(value, str) or any("\ud800" <= ch <= "\udfff" for ch in value):
            bad += 1
            continue
        text = clean_caption(value.replace("\ufeff", ""))
        if not text or len(text) > MAX_CAPTION_CHARS:
            bad += 1
        elif text not in expected:
            expected.append(text)
    assert kept == expected and (reason == "") == bool(kept)
    assert sum(counter.values()) == (bad if kept else 0)  # each bad caption of a kept record counted once
