"""data.decode_once: the pixel cache gives the tensors of decoding every step bit for bit, reports an
unreadable image exactly as decoding does, and a build that is cut leaves no entry behind."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from locktune.cache.pixel_cache import pixel_cache
from locktune.data.images import ConcatImages, FileImages, ImageSet
from locktune.runtime.location import cache_root
from locktune.train.images import BatchDecoder


def broken_files(tmp_path, emoji_pairs) -> ImageSet:
    """Twelve emoji, a truncated PNG and a text file named .png, an RGBA and a 16-bit grey image."""
    bad = tmp_path / "truncated.png"
    with open(emoji_pairs.images.paths[0], "rb") as f:
        bad.write_bytes(f.read()[:60])
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGBA", (30, 50), (255, 0, 0, 100)).save(tmp_path / "rgba.png")
    Image.fromarray(np.arange(40 * 20, dtype=np.uint16).reshape(40, 20) * 60).save(tmp_path / "grey16.png")
    extra = FileImages([bad, tmp_path / "text.png", tmp_path / "rgba.png", tmp_path / "grey16.png"])
    return ConcatImages([FileImages(emoji_pairs.images.paths[:12]), extra])


def test_rows_are_bit_identical_and_failures_counted_the_same(tmp_path, emoji_pairs):
    from locktune.towers.image import build_image_tower

    images = broken_files(tmp_path, emoji_pairs)
    preprocess = build_image_tower("mobilenet_v2", pretrained=False).preprocess(40)
    usable = np.arange(len(images))
    cached = pixel_cache(images, preprocess, workers=0)
    assert cached.built and sorted(cached.failed) == [12, 13]
    assert not pixel_cache(images, preprocess, workers=0).built, "reused"
    each_step, once = ({}, {})
    plain = BatchDecoder(images, usable, preprocess, each_step)
    fast = BatchDecoder(images, usable, preprocess, once, cached)
    for rows in ([0, 5, 11], [12, 14, 15, 3], [13, 13, 2]):
        a, used_a = plain.pixels(rows)
        b, used_b = fast.pixels(rows)
        assert used_a == used_b and a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b)
    assert each_step == once and len(once) == 2


def test_training_with_and_without_decode_once_is_identical(tmp_path, emoji_pairs):
    from tiny_configs import tiny_run
    from locktune.train.trainer import train

    runs = []
    for decode_once in (False, True):
        config = tiny_run(tmp_path / str(decode_once), steps=3, data={"decode_once": decode_once})
        config.model.setting, config.model.image_size = "uu", 32
        runs.append(train(config, pairs=emoji_pairs))
    assert runs[0].losses == runs[1].losses
    for (name, a), b in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().values()):
        assert torch.equal(a, b), name


class Interrupted(ImageSet):
    """An image set whose fifth image interrupts the build (as a kill or Ctrl-C would)."""

    def __init__(self, base: ImageSet):
        self.base, self.keys = base, [f"interrupted:{k}" for k in base.keys]

    def load(self, index):
        if index == 4:
            raise KeyboardInterrupt
        return self.base.load(index)


def test_a_cut_build_leaves_no_entry(tmp_path, emoji_pairs):
    from locktune.towers.image import build_image_tower

    preprocess = build_image_tower("mobilenet_v2", pretrained=False).preprocess(24)
    folder = cache_root() / "pixels"
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    with pytest.raises(KeyboardInterrupt):
        pixel_cache(Interrupted(FileImages(emoji_pairs.images.paths[:8])), preprocess, workers=0)
    assert set(os.listdir(folder)) == before


def test_building_the_entry_does_not_move_the_global_random_stream(tmp_path, emoji_pairs):
    """A run that builds the entry and one that reuses it must draw the same dropout masks afterwards."""
    from locktune.towers.image import build_image_tower

    preprocess = build_image_tower("mobilenet_v2", pretrained=False).preprocess(20)
    torch.manual_seed(5)
    pixel_cache(FileImages(emoji_pairs.images.paths[20:30]), preprocess, workers=0)
    after_build = torch.rand(3)
    torch.manual_seed(5)
    pixel_cache(FileImages(emoji_pairs.images.paths[20:30]), preprocess, workers=0)
    assert torch.equal(after_build, torch.rand(3))


def test_benchmark_features_decoded_once_equal_decoding_each_time(tmp_path, emoji_pairs):
    """Inside `benchmarks_decoded_once` a trained tower's evaluation features come from the pixel cache:
    the same features bit for bit (and the same unreadable images) as decoding every image."""
    from locktune.cache.embedding_cache import benchmarks_decoded_once, compute_features
    from locktune.towers.image import build_image_tower

    images = broken_files(tmp_path, emoji_pairs)
    tower = build_image_tower("mobilenet_v2", pretrained=False)
    preprocess = tower.preprocess(40)
    plain, plain_failed = compute_features(tower, preprocess, images, batch_size=5, workers=0)
    with benchmarks_decoded_once():
        once, once_failed = compute_features(tower, preprocess, images, batch_size=5, workers=0)
    assert torch.equal(torch.nan_to_num(plain, 7.0), torch.nan_to_num(once, 7.0))
    assert plain_failed.keys() == once_failed.keys() and len(once_failed) == 2
    from locktune.cache.pixel_cache import pixel_cache_key

    assert (cache_root() / "pixels" / f"{pixel_cache_key(images, preprocess)}.npy").is_file()  # read from the entry
