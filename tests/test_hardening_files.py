"""Hostile files (issue 25, items 3-5): an SVG is rendered from its own bytes within bounds, data sources and
benchmark folders keep to their folder, raw lines and captions are bounded before any work, and a benchmark
class without a readable image is left out of every score, by name."""

import gzip
import io
import json
import os
import signal
import tarfile
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from locktune.data.decode import UnusableImage, decode_image, failure_reason
from locktune.errors import LocktuneError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def square_svg(colour: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            f'<rect width="10" height="10" fill="{colour}"/></svg>')


def centre(image: Image.Image) -> tuple:
    return image.convert("RGB").getpixel((image.width // 2, image.height // 2))


def refusal(path) -> UnusableImage:
    with pytest.raises(UnusableImage) as caught:
        decode_image(path)
    return caught.value


# --- SVG: the file's own bytes, within bounds ---------------------------------------------------------------

@pytest.mark.parametrize("name, decoy", [("%2e%2e%2foutside.svg", "../outside.svg"), ("pct%41.svg", "pctA.svg"),
                                         ("a#b.svg", "a")])
def test_svg_named_like_a_url_renders_its_own_pixels(tmp_path, name, decoy):
    folder = tmp_path / "indexed"
    folder.mkdir()
    (folder / name).write_text(square_svg("#ff0000"))
    (folder / decoy).write_text(square_svg("#0000ff"))  # what the name would mean as a URL
    assert centre(decode_image(folder / name)) == RED


def test_svg_references_to_files_draw_nothing(tmp_path):
    Image.new("RGB", (10, 10), RED).save(tmp_path / "secret.png")
    (tmp_path / "other.svg").write_text(square_svg("#ff0000").replace("<rect", '<rect id="r"'))
    xlink = 'xmlns:xlink="http://www.w3.org/1999/xlink"'
    for i, reference in enumerate([f'<image xlink:href="secret.png" width="10" height="10"/>',
                                   f'<image xlink:href="file://{tmp_path}/secret.png" width="10" height="10"/>',
                                   '<use xlink:href="other.svg#r"/>']):
        path = tmp_path / f"refers{i}.svg"
        path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" {xlink} width="10" height="10">'
                        f'<rect width="10" height="10" fill="#0000ff"/>{reference}</svg>')
        assert centre(decode_image(path)) == BLUE, reference


def test_svg_embedded_data_image_still_draws(tmp_path):
    """data: URLs are part of the file: they are drawn (and bounded like any image)."""
    import base64

    png = io.BytesIO()
    Image.new("RGB", (10, 10), RED).save(png, "PNG")
    href = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    path = tmp_path / "embedded.svg"
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                    f'width="10" height="10"><image xlink:href="{href}" width="10" height="10"/></svg>')
    assert centre(decode_image(path)) == RED


def gzip_of_spaces(megabytes: int) -> bytes:
    """An SVG whose body is `megabytes` MB of spaces in a comment, gzip-compressed (~1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = b" " * 2**20
    parts = [packer.compress(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><!--')]
    parts += [packer.compress(chunk) for _ in range(megabytes)]
    parts += [packer.compress(b"--></svg>"), packer.flush()]
    return b"".join(parts)


@pytest.mark.parametrize("name", ["bomb.svg", "bomb.svgz"])
def test_gzip_svg_bomb_is_refused_within_the_byte_bound(tmp_path, name):
    from locktune.data.svg import MAX_SVG_BYTES

    path = tmp_path / name
    path.write_bytes(gzip_of_spaces(256))  # ~250 KB on disk, 256 MB inflated
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        error = refusal(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.reason == "svg too large" and name in str(error)
    assert peak < 3 * MAX_SVG_BYTES  # what the bound allows, not the 256 MB (and more to parse) inflated
    assert failure_reason(f"UnusableImage: {error}") == "svg too large"  # how the walkers count it


def test_small_gzip_svg_renders(tmp_path):
    path = tmp_path / "small.svgz"
    path.write_bytes(gzip.compress(square_svg("#ff0000").encode()))
    assert centre(decode_image(path)) == RED


def use_fanout(levels: int, fan: int) -> str:
    """Billion-laughs with <use>: level i draws level i-1 `fan` times, so the last draws fan**levels rects."""
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" '
             'height="10"><defs><rect id="l0" width="1" height="1"/>']
    for i in range(1, levels + 1):
        parts.append(f'<g id="l{i}">' + f'<use xlink:href="#l{i - 1}"/>' * fan + "</g>")
    return "".join(parts) + f'</defs><use xlink:href="#l{levels}"/></svg>'


def test_use_fanout_is_refused_before_rendering(tmp_path, monkeypatch):
    import cairosvg.surface

    from locktune.data.svg import MAX_SVG_ELEMENTS, drawn_elements

    # the count is the number of elements cairosvg draws: 1 + 3 + 9 for three levels of three, by hand
    small = use_fanout(2, 3)
    # root svg, defs, rect l0, g l1 (3 uses x (1 + rect)), g l2 (3 uses x (1 + l1)), the final use (1 + l2)
    l1 = 1 + 3 * (1 + 1)
    l2 = 1 + 3 * (1 + l1)
    assert drawn_elements(small.encode(), 10**9) == 1 + (1 + 1 + l1 + l2) + (1 + l2)
    path = tmp_path / "fanout.svg"
    path.write_text(use_fanout(9, 10))  # 10**9 rects from 2 KB
    monkeypatch.setattr(cairosvg.surface.PNGSurface, "convert", lambda *a, **k: pytest.fail("rendered"))
    error = refusal(path)
    assert error.reason == "svg too complex" and f"{MAX_SVG_ELEMENTS:,}" in str(error)


def test_use_cycle_and_entities_are_refused(tmp_path):
    cycle = tmp_path / "cycle.svg"
    cycle.write_text('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
                     '<g id="a"><use xlink:href="#b"/></g><g id="b"><use xlink:href="#a"/></g></svg>')
    assert refusal(cycle).reason == "svg too complex"
    laughs = tmp_path / "laughs.svg"
    laughs.write_text('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">'
                      '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                      '<svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>')
    assert refusal(laughs).reason == "unsafe svg"


@pytest.mark.parametrize("height, reason", [(1200, "image too thin"), (100_000, "image too large")])
def test_thin_svg_is_refused_before_a_canvas_is_allocated(tmp_path, monkeypatch, height, reason):
    import cairosvg.surface

    # rendered 256 wide: 256 x 307,200 (aspect over 1000) and 256 x 25,600,000 (6.5 gigapixels)
    path = tmp_path / "strip.svg"
    path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 {height}"><rect width="1" '
                    f'height="{height}"/></svg>')
    monkeypatch.setattr(cairosvg.surface.PNGSurface, "convert", lambda *a, **k: pytest.fail("rendered"))
    assert refusal(path).reason == reason


def test_render_timer_leaves_an_outer_timer_armed(tmp_path):
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 100.0)
        path = tmp_path / "red.svg"
        path.write_text(square_svg("#ff0000"))
        assert centre(decode_image(path)) == RED
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < remaining <= 100.0 and not fired
        assert signal.getsignal(signal.SIGALRM) is not None and signal.getsignal(signal.SIGALRM) != signal.SIG_DFL
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- raw lines and captions: bounded before any work ------------------------------------------------------

def png(path, colour=RED):
    Image.new("RGB", (8, 8), colour).save(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_a_huge_manifest_line_is_skipped_without_being_held(tmp_path, suffix):
    from locktune.data.lines import MAX_LINE_BYTES
    from locktune.data.sources.manifest import read_manifest

    for name in "abc":
        png(tmp_path / f"{name}.png")
    huge = "x" * (24 * 2**20)
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        rows = [json.dumps({"image": "a.png", "caption": "a red square"}),
                json.dumps({"image": "b.png", "caption": huge}),
                json.dumps({"image": "c.png", "caption": "another red square"})]
    else:
        rows = ["image\tcaption", "a.png\ta red square", f"b.png\t{huge}", "c.png\tanother red square"]
    path.write_text("\n".join(rows) + "\n")
    tracemalloc.start()
    try:
        pairs = read_manifest(path, tmp_path, quiet=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pairs.captions == [["a red square"], ["another red square"]]
    assert pairs.skipped == {"line too long": 1}
    assert peak < 4 * MAX_LINE_BYTES  # a bounded buffer, not the 24 MB line


def test_line_reader_numbers_lines_and_streams_past_long_ones():
    from locktune.data.lines import bounded_lines

    text = b"one\n" + b"y" * 100 + b"\nthree\n" + b"z" * 50 + b"\n\nlast"
    got = list(bounded_lines(io.BytesIO(text), limit=40))
    assert got == [(1, b"one\n"), (2, None), (3, b"three\n"), (4, None), (5, b"\n"), (6, b"last")]
    assert list(bounded_lines(io.BytesIO(b"q" * 100), limit=40)) == [(1, None)]


def test_caption_length_is_checked_before_cleaning(monkeypatch):
    from locktune.data import record_checks

    cleaned = []
    monkeypatch.setattr(record_checks, "clean_caption", lambda text: cleaned.append(len(text)) or text.strip())
    assert record_checks.check_caption("w " * 5_000_000) == (None, "caption too long")
    assert record_checks.check_caption(b"w " * 5_000_000) == (None, "caption too long")
    assert cleaned == []
    assert record_checks.check_caption("  fine  ") == ("fine", "")


def test_caption_deduplication_keeps_first_order_on_many_captions():
    from locktune.data.record_checks import check_captions

    raws = [f"caption_{i % 50_000}" for i in range(100_000)] + [b"", 7]
    kept, reason = check_captions(raws)
    expected = list(dict.fromkeys(f"caption {i}" for i in range(50_000)))  # independent: ordered set by hand
    assert kept == expected and reason == ""


def test_key_txt_caption_files_are_bounded(tmp_path, capsys):
    from locktune.data.sources.folder import load_folder
    from locktune.data.record_checks import MAX_CAPTION_FILE_BYTES

    png(tmp_path / "many.png")
    (tmp_path / "many.txt").write_text("\n".join(f"line {i % 20_000}" for i in range(40_000)))  # ~0.4 MB
    png(tmp_path / "huge.png")
    with open(tmp_path / "huge.txt", "wb") as f:
        f.write(b"h" * (MAX_CAPTION_FILE_BYTES + 10))
    png(tmp_path / "plain.png")
    (tmp_path / "plain.txt").write_text("a red square\n")
    pairs = load_folder(str(tmp_path))
    by_key = dict(zip(pairs.images.keys, pairs.captions))
    assert by_key[str(tmp_path / "many.png")] == [f"line {i}" for i in range(20_000)]
    assert str(tmp_path / "huge.png") not in by_key
    assert pairs.skipped == {"caption file too large": 1}
    assert "huge.txt" in capsys.readouterr().err


def test_webdataset_caption_member_over_the_bound_is_not_read(tmp_path):
    from locktune.data.sources.webdataset import load_shards
    from locktune.data.record_checks import MAX_CAPTION_FILE_BYTES

    image = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(image, "PNG")
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, caption in [("k0", b"a red square"), ("k1", b"x" * (MAX_CAPTION_FILE_BYTES + 1)),
                             ("k2", b"another")]:
            for extension, data in (("png", image.getvalue()), ("txt", caption)):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    pairs = load_shards(str(shard), quiet=True)
    assert pairs.images.keys == ["k0", "k2"] and pairs.skipped == {"caption file too large": 1}


# --- folders keep to themselves ---------------------------------------------------------------------------

def test_folder_source_refuses_links_and_dotdot_leading_out(tmp_path):
    from locktune.data.sources.folder import load_folder

    outside = png(tmp_path / "outside.png", BLUE)
    root = tmp_path / "data"
    root.mkdir()
    for name in ("a", "b"):
        png(root / f"{name}.png")
        (root / f"{name}.txt").write_text(f"picture {name}\n")
    os.symlink(outside, root / "c.png")  # a link to a file outside the folder
    (root / "c.txt").write_text("picture c\n")
    os.symlink(root / "a.png", root / "d.png")  # a link that stays inside: fine
    (root / "d.txt").write_text("picture d\n")
    pairs = load_folder(str(root))
    assert [os.path.basename(k) for k in pairs.images.keys] == ["a.png", "b.png", "d.png"]
    assert pairs.skipped == {"outside the folder": 1}
    followed = load_folder(f"{root}?follow_symlinks=1")
    assert [os.path.basename(k) for k in followed.images.keys] == ["a.png", "b.png", "c.png", "d.png"]
    with pytest.raises(LocktuneError, match="follow_symlinks"):
        load_folder(f"{root}?follow=yes")

    (root / "captions.tsv").write_text("image\tcaption\na.png\tpicture a\nb.png\tpicture b\n"
                                       "../outside.png\tescaped\n")
    pairs = load_folder(str(root))
    assert pairs.captions == [["picture a"], ["picture b"]] and pairs.skipped == {"outside the folder": 1}


def test_benchmark_folder_refuses_classes_and_links_leading_out(tmp_path, capsys):
    from locktune.eval.benchmarks.user_data import image_folder

    outside = tmp_path / "outside"
    outside.mkdir()
    png(outside / "x.png", BLUE)
    root = tmp_path / "bench" / "set"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        png(root / name / "1.png")
    os.symlink(outside / "x.png", root / "dog" / "2.png")
    bench = image_folder(root)
    assert sorted(os.path.basename(os.path.dirname(k)) + "/" + os.path.basename(k) for k in bench.images.keys) \
        == ["cat/1.png", "dog/1.png"]
    assert "1 links leading outside" in capsys.readouterr().err
    (root / "classes.txt").write_text("cat\ndog\n../../outside\n")
    with pytest.raises(LocktuneError, match="'../../outside' leads outside"):
        image_folder(root)


# --- a class with no readable image is left out of every score, by name -----------------------------------

def test_zero_shot_leaves_out_a_class_without_readable_images(tmp_path, monkeypatch, capsys):
    from locktune.data.images import FileImages
    from locktune.eval.benchmarks import ClassificationSet
    from locktune.eval.evaluators import zero_shot as evaluator

    # classes A, B, C; both C images unreadable.  Image embeddings (2-d), class embeddings by name:
    # A1 -> A, A2 -> B (wrong), B1 -> B, B2 -> B.  By hand: recall A 1/2, B 2/2, mean 0.75; top-1 3/4;
    # chance 1/2 (two classes remain); top-5 is top-2 here: every image right.
    images = torch.tensor([[1.0, 0.1], [0.2, 1.0], [0.0, 1.0], [0.1, 1.0], [0.0, 0.0], [0.0, 0.0]])
    valid = torch.tensor([True, True, True, True, False, False])
    by_name = {"A": [1.0, 0.0], "B": [0.0, 1.0], "C": [0.7, 0.7]}
    asked = []

    def class_embeddings(model, names, templates):
        asked.append(list(names))
        return torch.tensor([by_name[n] for n in names])

    monkeypatch.setattr(evaluator, "image_features", lambda model, images_, workers, desc: (images, valid))
    monkeypatch.setattr(evaluator, "class_embeddings", class_embeddings)
    model = type("Model", (), {"embed_image_features": staticmethod(lambda f: f)})()
    files = [png(tmp_path / f"{i}.png") for i in range(6)]
    bench = ClassificationSet("three", FileImages(files), [0, 0, 1, 1, 2, 2], ["A", "B", "C"], ["{}"])
    result = evaluator.zero_shot_evaluation(model, bench)
    m = result.metrics
    assert asked == [["A", "B"]]
    assert m["dropped_classes"] == ["C"] and m["classes"] == 2 and m["images"] == 4
    assert m["mean_per_class_recall"] == pytest.approx(0.75) and m["top1"] == pytest.approx(0.75)
    assert m["chance_top1"] == pytest.approx(0.5) and m["top5"] == pytest.approx(1.0)
    assert m["majority_top1"] == pytest.approx(0.5)
    assert m["per_image"] == {"correct": "1011", "labels": [0, 0, 1, 1]}
    assert result.details["class_names"] == ["A", "B"]
    assert "left out of the scores: C" in capsys.readouterr().err
    table = "\n".join(evaluator.markdown({"three": m}))
    assert "| 2 (1 without images left out: C) |" in table

    valid[:] = False
    with pytest.raises(LocktuneError, match="none of its 6 images"):
        evaluator.zero_shot_evaluation(model, bench)
