"""The sharded embedding cache: broken images counted by reason, resumable after a kill, rows read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from locktune.cache.sharded import ShardedCache, build_sharded_cache
from locktune.data.pairs import load_pairs
from locktune.errors import LocktuneError
from test_data_sources import png, write_tar

FUZZ = Path(__file__).parent / "fuzz" / "images"


@pytest.fixture(scope="module")
def tower():
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    # Pretrained (an offline pip package): a from-scratch mobilenet_v2 outputs ~1e-9, zero in float16, and
    # every comparison below would pass on zeros.
    tower = build_image_tower("mobilenet_v2", pretrained=True)
    return tower, preprocess_for(tower, 64)


def fuzz_shards(folder: Path) -> str:
    """The checked-in broken-image corpus (raster files only: shards hold jpg/png/webp) plus one bad caption."""
    members = []
    for i, path in enumerate(sorted(p for p in FUZZ.iterdir() if p.suffix in (".png", ".jpg"))):
        members += [(f"{i:03d}{path.suffix}", path.read_bytes()), (f"{i:03d}.txt", path.stem.encode())]
    members += [("zzz.png", png()), ("zzz.txt", b"   ")]
    write_tar(folder / "00000.tar", members)
    return str(folder / "00000.tar")


def test_every_broken_image_is_counted_by_reason(tmp_path, tower, capsys):
    pairs = load_pairs([fuzz_shards(tmp_path)])
    names = [c[0] for c in pairs.captions]
    assert len(names) == 14 and pairs.skipped == {"empty caption": 1}
    cache = build_sharded_cache(*tower, pairs, tmp_path / "cache", shard_size=5, batch_size=4, workers=0)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    # By hand from the files: bad_empty, bad_random_bytes, bad_text_named and bad_jpeg_header_only (44 bytes:
    # a JPEG start marker, then zeros) are no image Pillow can identify; bad_truncated is a PNG that ends
    # early; bad_bomb claims 200000x200000 pixels.
    assert manifest["image_failures"] == {"not an image": 4, "truncated image": 1, "image too large": 1}
    assert manifest["valid"] == 8 and manifest["source_skipped"] == {"empty caption": 1}
    assert [n.startswith("ok ") for n in names] == cache.valid.tolist()  # ok_* all load, CMYK/16-bit/palette too
    assert [len(s["sha256"]) for s in manifest["shards"]] == [64, 64, 64]
    assert "7 skipped" in capsys.readouterr().err
    rows = cache.rows(range(14))
    assert torch.isfinite(rows[cache.valid]).all() and torch.isnan(rows[~cache.valid]).all()


def many_pairs(folder: Path, count: int) -> str:
    members = []
    for i in range(count):
        members += [(f"{i:04d}.png", png((i * 7 % 256, i * 13 % 256, 90))), (f"{i:04d}.txt", f"pair {i}".encode())]
    write_tar(folder / "00000.tar", members)
    return str(folder / "00000.tar")


class Killed(Exception):
    pass


def test_killed_precompute_resumes_to_the_same_cache(tmp_path, tower):
    image_tower, preprocess = tower
    pairs = load_pairs([many_pairs(tmp_path, 22)])
    whole = build_sharded_cache(image_tower, preprocess, pairs, tmp_path / "whole", shard_size=6, batch_size=3,
                                workers=0)

    calls = []
    real_forward = image_tower.forward

    def dies_on_the_fifth_batch(pixels):
        calls.append(len(pixels))
        if len(calls) == 5:
            raise Killed()
        return real_forward(pixels)

    image_tower.forward = dies_on_the_fifth_batch
    try:
        with pytest.raises(Killed):
            build_sharded_cache(image_tower, preprocess, pairs, tmp_path / "resumed", shard_size=6, batch_size=3,
                                workers=0)
        assert sorted(p.name for p in (tmp_path / "resumed" / "shards").glob("*.json")) == ["00000.json", "00001.json"]
        assert not (tmp_path / "resumed" / "manifest.json").exists()
        with pytest.raises(LocktuneError, match="not a finished sharded cache"):
            ShardedCache.open(tmp_path / "resumed")
        calls.clear()
        resumed = build_sharded_cache(image_tower, preprocess, pairs, tmp_path / "resumed", shard_size=6,
                                      batch_size=3, workers=0)
    finally:
        del image_tower.forward
    assert sum(calls) == 22 - 12  # only the two unfinished shards were computed again
    files = sorted(p.name for p in (tmp_path / "whole/shards").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "resumed/shards").iterdir()) and len(files) == 4 * 4
    for name in files:  # vectors, texts and sidecars all the same bytes
        assert (tmp_path / "whole/shards" / name).read_bytes() == (tmp_path / "resumed/shards" / name).read_bytes()
    assert list(resumed.captions) == list(whole.captions) == [[f"pair {i}"] for i in range(22)]
    assert list(resumed.keys) == list(whole.keys) == [f"{i:04d}" for i in range(22)]
    assert whole.rows(range(22)).abs().max() > 0.1  # a real signal was compared


def test_rows_gather_matches_the_arrays_and_checksums_are_checked(tmp_path, tower):
    pairs = load_pairs([many_pairs(tmp_path, 13)])
    build_sharded_cache(*tower, pairs, tmp_path / "c", shard_size=5, batch_size=4, workers=0)
    full = np.concatenate([np.load(tmp_path / "c/shards" / f"{s:05d}.npy") for s in range(3)]).astype(np.float32)
    assert full.shape == (13, 1280) and np.load(tmp_path / "c/shards/00000.npy").dtype == np.float16
    order = [12, 0, 7, 7, 4, 5]
    for access in ("pread", "mmap"):
        cache = ShardedCache.open(tmp_path / "c", verify=True, access=access)
        got = cache.rows(order)
        assert got.dtype == torch.float32 and np.array_equal(got.numpy(), full[order])
        assert list(cache.captions) == [[f"pair {i}"] for i in range(13)] and cache.keys[-1] == "0012"
        assert cache.captions[2:4] == [["pair 2"], ["pair 3"]] and cache.valid.all()
    with open(tmp_path / "c/shards/00001.npy", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    with pytest.raises(LocktuneError, match=r"00001.npy' is missing or does not match its checksum"):
        ShardedCache.open(tmp_path / "c", verify=True)
    with pytest.raises(LocktuneError, match="holds a cache of other images"):
        build_sharded_cache(*tower, load_pairs([many_pairs(tmp_path / "c", 3)]), tmp_path / "c", shard_size=5)


def test_mostly_broken_images_stop_with_a_clear_error(tmp_path, tower):
    members = [("a.png", png()), ("a.txt", b"fine")]
    members += [m for i in range(3) for m in ((f"b{i}.png", b"garbage"), (f"b{i}.txt", b"broken"))]
    write_tar(tmp_path / "x.tar", members)
    pairs = load_pairs([str(tmp_path / "x.tar")])
    with pytest.raises(LocktuneError, match=r"3 of 4 records failed \(not an image: 3\)"):
        build_sharded_cache(*tower, pairs, tmp_path / "c", shard_size=8, workers=0)
    assert not (tmp_path / "c" / "manifest.json").exists()  # nothing for training to pick up


def test_augmented_views_are_seeded_crops_and_view_zero_is_the_plain_image(tmp_path, tower):
    from locktune.data.augment import random_crop, view_seed

    import io

    from PIL import Image

    def textured(i: int) -> bytes:  # crops of a flat colour would all look alike
        yy, xx = np.mgrid[0:48, 0:64]
        rgb = np.stack([xx * 4, yy * 5, (xx * yy + 40 * i) % 256], -1).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        return buffer.getvalue()

    write_tar(tmp_path / "t.tar", [m for i in range(7) for m in ((f"{i:04d}.png", textured(i)),
                                                                  (f"{i:04d}.txt", f"pair {i}".encode()))])
    pairs = load_pairs([str(tmp_path / "t.tar")])
    plain = build_sharded_cache(*tower, pairs, tmp_path / "plain", shard_size=4, batch_size=3, workers=0)
    three = build_sharded_cache(*tower, pairs, tmp_path / "three", shard_size=4, batch_size=3, workers=0, views=3)
    again = build_sharded_cache(*tower, pairs, tmp_path / "again", shard_size=4, batch_size=3, workers=0, views=3)
    stored = np.concatenate([np.load(tmp_path / "three/shards" / f"{s:05d}.npy") for s in range(2)]).astype(np.float32)
    assert stored.shape == (7, 3, 1280) and three.views == 3 and three.dim == 1280
    assert (tmp_path / "three/shards/00001.npy").read_bytes() == (tmp_path / "again/shards/00001.npy").read_bytes()
    # View 0 is what a one-view cache holds (float16 rounding of the same forward pass, batched by 3 vs 9).
    assert np.allclose(three.rows(range(7)).numpy(), plain.rows(range(7)).numpy(), atol=2e-2)
    assert np.abs(stored).max() > 0.1  # a real signal to compare
    assert not np.allclose(stored[:, 1], stored[:, 0], atol=2e-2) and not np.allclose(stored[:, 2], stored[:, 1])
    for access in ("pread", "mmap"):
        cache = ShardedCache.open(tmp_path / "three", access=access)
        assert np.array_equal(cache.rows([6, 0, 4], views=[2, 1, 0]).numpy(), stored[[6, 0, 4], [2, 1, 0]])
    with pytest.raises(ValueError, match="0..2"):
        three.rows([0], views=3)
    # The crop itself: seeded by key and view, within the configured area and inside the image.
    image = pairs.images.load(0).resize((40, 30))
    a, b = random_crop(image, view_seed("0000", 1)), random_crop(image, view_seed("0000", 1))
    assert a.tobytes() == b.tobytes() and 0.45 * 1200 <= a.size[0] * a.size[1] <= 1200


@pytest.mark.parametrize("access", ["pread", "mmap"])
def test_caption_counts_are_the_records_caption_lists(tmp_path, access):
    from locktune.cache.sharded import ShardWriter

    captions = [["one"], ["a\u00e9\u4e2d", "b", "c"], ["x", "y"], ["\U0001f600 smile"], ["p", "q", "r", "s"],
                ["last one, alone in its shard"]]
    keys = ["k0", "k1\nwith a newline", "k2", "", "k4", "k5"]
    writer = ShardWriter(tmp_path / "c", {"tower": "t", "weights": "w", "preprocess": "p", "source": "s",
                                          "images": "i", "count": len(keys), "shard_size": 4, "dtype": "float16",
                                          "views": 1})
    for shard in range(writer.shard_count()):
        rows = writer.shard_range(shard)
        writer.write(shard, np.ones((len(rows), 8), np.float32), [keys[i] for i in rows],
                     [captions[i] for i in rows], {})
    writer.finish({})
    cache = ShardedCache.open(tmp_path / "c", access=access)
    counts = cache.caption_counts()
    assert counts.dtype == np.int32 and counts.tolist() == [len(c) for c in captions] == [1, 3, 2, 1, 4, 1]
    assert list(cache.captions) == captions and list(cache.keys) == keys
