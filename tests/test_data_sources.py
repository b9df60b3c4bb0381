"""Pair sources read users' data: WebDataset shards, manifests, folders; bad records skipped and counted."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from locktune.data.pairs import load_pairs
from locktune.data.sources.webdataset import expand_braces
from locktune.errors import LocktuneError


def png(colour=(200, 10, 10), size=8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 90, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_brace_expansion_keeps_padding_and_lists():
    assert expand_braces("d/{00008..00011}.tar") == ["d/00008.tar", "d/00009.tar", "d/00010.tar", "d/00011.tar"]
    assert expand_braces("{a,b}/{1..2}.tar") == ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def broken_shards(folder: Path) -> str:
    """Two shards holding one record of every bad kind; the counts below are set by hand from this list."""
    first = [
        ("000.png", png()), ("000.txt", b"a red square"),
        ("001.jpg", jpg()), ("001.txt", b"a cat\n\na dog\n"),  # two captions, a blank line between
        ("002.png", png()), ("002.txt", b""),  # empty caption
        ("003.png", png()), ("003.txt", b"  \n\t "),  # whitespace only
        ("004.png", png()), ("004.txt", b"\xff\xfe not utf-8"),  # non-UTF-8
        ("005.png", png()), ("005.txt", b"x" * 3000),  # far too long
        ("006.txt", b"caption without an image"),  # missing image
        ("007.png", png()),  # missing caption
        ("008.png", png()), ("008.json", json.dumps({"caption": "from the json"}).encode()),
        ("009.webp", b"not really an image"), ("009.txt", b"decoded later, counted by the cache"),
        ("010.png", png()), ("010.txt", b"a good caption\n\xff a bad one"),  # kept, one caption dropped
    ]
    second = [(f"g{i:02d}.png", png((i * 20, 0, 0))) for i in range(10)]
    second = [m for i in range(10) for m in (second[i], (f"g{i:02d}.txt", f"good {i}".encode()))]
    second += [("000.png", png()), ("000.txt", b"duplicate key"),
               ("cut.txt", b"cut record"), ("cut.png", png(size=64))]
    write_tar(folder / "00000.tar", first)
    write_tar(folder / "00001.tar", second)
    with tarfile.open(folder / "00001.tar") as tar:
        last = tar.getmember("cut.png")
    with open(folder / "00001.tar", "r+b") as f:  # cut mid-way through the last image's bytes
        f.truncate(last.offset_data + last.size // 2)
    return str(folder / "{00000..00001}.tar")


def test_webdataset_shards_skip_every_bad_record_by_reason(tmp_path, capsys):
    pairs = load_pairs([broken_shards(tmp_path)])
    assert pairs.skipped == {"empty caption": 2, "non-utf8 caption": 1, "caption too long": 1, "missing image": 1,
                             "missing caption": 1, "duplicate key": 1, "truncated shard": 1,
                             "caption dropped: non-utf8 caption": 1}
    assert pairs.images.keys == ["000", "001", "008", "009", "010"] + [f"g{i:02d}" for i in range(10)]
    assert pairs.captions[4] == ["a good caption"]
    assert pairs.captions[:3] == [["a red square"], ["a cat", "a dog"], ["from the json"]]
    assert np.asarray(pairs.images.load(0).convert("RGB"))[0, 0].tolist() == [200, 10, 10]
    assert pairs.images.load(1).format == "JPEG"
    assert "8 skipped" in capsys.readouterr().err


def test_shards_where_most_records_fail_stop_with_a_clear_error(tmp_path):
    write_tar(tmp_path / "bad.tar", [("a.png", png()), ("a.txt", b""), ("b.txt", b"no image"), ("c.png", png()),
                                     ("c.txt", b"fine")])
    with pytest.raises(LocktuneError, match=r"2 of 3 records failed.*empty caption: 1"):
        load_pairs([str(tmp_path / "bad.tar")])


def test_missing_shard_is_named(tmp_path):
    write_tar(tmp_path / "00000.tar", [("a.png", png()), ("a.txt", b"x")])
    with pytest.raises(LocktuneError, match=r"00001.tar' does not exist"):
        load_pairs([str(tmp_path / "{00000..00001}.tar")])


def manifest_images(folder: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(png())


def test_csv_manifest_groups_captions_and_counts_bad_rows(tmp_path):
    manifest_images(tmp_path)
    rows = (b"filepath,title\n"
            b"a.png,first caption\n"
            b"a.png,second caption\n"  # same image: kept together
            b"b.png,\n"  # empty
            b"missing.png,a caption\n"  # no such file
            b"c.png,bad \xff bytes\n"  # not UTF-8
            b"c.png,fine after all\n")
    (tmp_path / "pairs.csv").write_bytes(rows)
    pairs = load_pairs([f"manifest:{tmp_path / 'pairs.csv'}?image=filepath&caption=title"])
    assert pairs.captions == [["first caption", "second caption"], ["fine after all"]]
    assert pairs.images.keys == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]
    assert pairs.skipped == {"empty caption": 1, "missing image file": 1, "non-utf8 caption": 1}


def test_tsv_and_jsonl_by_shape_with_default_columns(tmp_path):
    manifest_images(tmp_path)
    (tmp_path / "p.tsv").write_text("image\tcaption\na.png\tan a\nb.png\ta b\n")
    assert load_pairs([str(tmp_path / "p.tsv")]).captions == [["an a"], ["a b"]]
    (tmp_path / "p.jsonl").write_text('{"image": "a.png", "caption": ["one", "two"]}\n{oops\n'
                                      '{"image": "b.png", "caption": "three"}\n{"image": "c.png", "caption": "4"}\n')
    pairs = load_pairs([str(tmp_path / "p.jsonl")])
    assert pairs.captions == [["one", "two"], ["three"], ["4"]] and pairs.skipped == {"unreadable row": 1}


def test_manifest_without_the_named_column_says_which_exist(tmp_path):
    (tmp_path / "p.csv").write_text("url,text\na.png,x\n")
    with pytest.raises(LocktuneError, match=r"no image column.*its columns: url, text"):
        load_pairs([str(tmp_path / "p.csv")])


def test_folder_with_sidecar_captions(tmp_path):
    manifest_images(tmp_path)
    (tmp_path / "a.txt").write_text("an apple\na fruit\n")
    (tmp_path / "b.txt").write_text("a banana")
    (tmp_path / "c.txt").write_bytes(b"   ")
    (tmp_path / "d.png").write_bytes(png())  # no caption file
    pairs = load_pairs([f"folder:{tmp_path}"])
    assert pairs.captions == [["an apple", "a fruit"], ["a banana"]]
    assert pairs.skipped == {"empty caption": 1, "missing caption": 1}
    assert load_pairs([str(tmp_path)]).captions == pairs.captions  # a directory picks the folder source


def test_unreadable_and_header_cut_shards_are_counted(tmp_path):
    good = [m for i in range(6) for m in ((f"{i}.png", png()), (f"{i}.txt", f"good {i}".encode()))]
    write_tar(tmp_path / "00000.tar", good)
    (tmp_path / "00001.tar").write_bytes(b"")  # empty
    (tmp_path / "00002.tar").write_bytes(bytes(range(256)) * 8)  # not a tar
    write_tar(tmp_path / "00003.tar", [("a.png", png()), ("a.txt", b"kept before the cut"), ("b.txt", b"lost")])
    with tarfile.open(tmp_path / "00003.tar") as tar:
        cut_at = tar.getmember("b.txt").offset + 100  # inside the last header
    with open(tmp_path / "00003.tar", "r+b") as f:
        f.truncate(cut_at)
    write_tar(tmp_path / "00004.tar", [("c.png", png()), ("c.txt", b"complete members, end marker cut")])
    with tarfile.open(tmp_path / "00004.tar") as tar:
        end = tar.getmember("c.txt").offset_data + 512
    with open(tmp_path / "00004.tar", "r+b") as f:
        f.truncate(end)
    pairs = load_pairs([str(tmp_path / "{00000..00004}.tar")])
    assert pairs.skipped == {"unreadable shard": 2, "truncated shard": 2}
    assert [c[0] for c in pairs.captions] == [f"good {i}" for i in range(6)] + ["kept before the cut",
                                                                                 "complete members, end marker cut"]
