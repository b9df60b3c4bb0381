"""The validation hold-out and the nested training subset: fixed by the pairs alone, disjoint, nested, and
wired into training (which never sees a held-out pair) with the locked tower's cache shared."""

import hashlib

import numpy as np
import pytest

from locktune.config import load_config
from locktune.data.images import ArrayImages, FileImages, SubsetImages
from locktune.data.pairs import PairSet
from locktune.data.validation_split import pair_identity, split_pairs
from locktune.errors import LocktuneError


def file_pairs(root: str, count: int = 2000) -> PairSet:
    paths = [f"{root}/pack/images/{i:05d}.png" for i in range(count)]
    return PairSet("files", FileImages(paths), [[f"picture {i}"] for i in range(count)])


def test_split_is_disjoint_covers_everything_and_has_about_the_fraction():
    pairs = file_pairs("/data")
    train, held = split_pairs(pairs, 0.2)
    train_keys, held_keys = set(train.images.keys), set(held.images.keys)
    assert not train_keys & held_keys and train_keys | held_keys == set(pairs.images.keys)
    assert 0.17 < len(held) / len(pairs) < 0.23
    assert isinstance(train.images, SubsetImages) and train.images.base is pairs.images
    for i, key in enumerate(train.images.keys):  # captions travel with their image
        assert train.captions[i] == pairs.captions[pairs.images.keys.index(key)]


def test_split_does_not_depend_on_where_the_data_are_installed_or_on_other_pairs():
    a = split_pairs(file_pairs("/home/a/.cache/npm"), 0.1)[1]
    b = split_pairs(file_pairs("/opt/elsewhere"), 0.1)[1]
    assert [pair_identity(k) for k in a.images.keys] == [pair_identity(k) for k in b.images.keys]
    fewer = file_pairs("/data", 1000)  # a pair's side does not depend on the rest of the set
    held_fewer = set(split_pairs(fewer, 0.1)[1].images.keys)
    assert held_fewer == {k for k in split_pairs(file_pairs("/data"), 0.1)[1].images.keys if k in set(fewer.images.keys)}


def test_training_subsets_are_nested_and_exclude_validation():
    pairs = file_pairs("/data")
    held = set(split_pairs(pairs, 0.1)[1].images.keys)
    small, _ = split_pairs(pairs, 0.1, max_train_pairs=300)
    large, _ = split_pairs(pairs, 0.1, max_train_pairs=900)
    assert len(small) == 300 and len(large) == 900
    assert set(small.images.keys) < set(large.images.keys)
    assert not set(large.images.keys) & held
    everything, _ = split_pairs(pairs, 0.1, max_train_pairs=10**6)
    assert len(everything) == len(pairs) - len(held)


def test_non_path_keys_are_used_as_they_are():
    images = ArrayImages(np.zeros((50, 4, 4), np.uint8), "mnist")
    pairs = PairSet("a", images, [["x"]] * 50)
    assert pair_identity(images.keys[3]) == "mnist:3"
    # The held-out side written out from the rule (SHA-1 of salt + key, first 8 bytes over 2^64, below the
    # fraction) with hashlib alone: the key itself is hashed, in the source's order.
    expected = [f"mnist:{i}" for i in range(50) if int.from_bytes(
        hashlib.sha1(f"locktune-validation:mnist:{i}".encode()).digest()[:8], "big") / 2.0**64 < 0.3]
    train, held = split_pairs(pairs, 0.3)
    assert held.images.keys == expected and 5 < len(expected) < 25
    assert train.images.keys == [k for k in images.keys if k not in expected]


@pytest.mark.parametrize("override, message", [
    ("data.validation_fraction=0.5", "below 0.5"), ("data.validation_fraction=-0.1", "at least 0"),
    ("data.max_train_pairs=-1", "max_train_pairs"), ("train.batchnorm=bogus", "recalibrate, train, freeze"),
    ("train.bn_recalibration_images=0", "at least 1"),
])
def test_bad_values_are_config_errors(override, message):
    with pytest.raises(LocktuneError, match=message):
        load_config(overrides=[override])


def test_sharded_cache_refuses_a_split():
    with pytest.raises(LocktuneError, match="sharded cache"):
        load_config(overrides=["data.embedding_cache=/x", "data.validation_fraction=0.1"])


def test_training_never_sees_held_out_pairs_and_reuses_the_source_cache(tmp_path, emoji_pairs, monkeypatch):
    import json

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))  # an empty cache: the first run computes it

    from tiny_configs import tiny_run
    from locktune.train import trainer

    seen: set[int] = set()
    original = trainer.TrainingImages.take

    def spy(self, rows):
        out = original(self, rows)
        seen.update(out[0])
        return out

    first = trainer.train(tiny_run(tmp_path / "all", steps=1), pairs=emoji_pairs)
    trainer.TrainingImages.take = spy
    try:
        config = tiny_run(tmp_path / "split", steps=6, data={"validation_fraction": 0.25, "max_train_pairs": 40})
        result = trainer.train(config, pairs=emoji_pairs)
    finally:
        trainer.TrainingImages.take = original
    train, held = split_pairs(emoji_pairs, 0.25, 40)
    assert result.training_pairs == 40 and result.held_out_pairs == len(held) > 0
    trained_keys = {train.images.keys[i] for i in seen}
    assert trained_keys and not trained_keys & set(held.images.keys)
    assert first.image_forward_passes == len(emoji_pairs)
    assert result.image_forward_passes == 0, "the whole source set's cache entry serves the subset"
    summary = json.loads((tmp_path / "split" / "training.json").read_text())
    assert summary["held_out_pairs"] == len(held) and summary["training_pairs"] == 40


def test_a_subset_without_its_source_entry_embeds_only_itself(tmp_path, emoji_pairs, monkeypatch):
    """No entry for the whole source set yet: the training subset gets its own entry (40 images embedded,
    not 96), and training from it equals training from the source set's rows."""
    from tiny_configs import tiny_run
    from locktune.train.trainer import train

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    split = {"validation_fraction": 0.25, "max_train_pairs": 40}
    alone = train(tiny_run(tmp_path / "alone", steps=4, data=split), pairs=emoji_pairs)
    assert alone.image_forward_passes == 40
    train(tiny_run(tmp_path / "all", steps=1), pairs=emoji_pairs)  # now the source set has its entry
    from_source = train(tiny_run(tmp_path / "from-source", steps=4, data=split), pairs=emoji_pairs)
    assert from_source.image_forward_passes == 0
    assert alone.losses == pytest.approx(from_source.losses, rel=1e-5)


def test_a_config_built_in_code_is_refused_with_a_sharded_cache_too(tmp_path, emoji_pairs):
    from tiny_configs import tiny_run
    from locktune.train.trainer import train

    config = tiny_run(tmp_path / "run", data={"embedding_cache": str(tmp_path / "shards"), "max_train_pairs": 10})
    with pytest.raises(LocktuneError, match="sharded cache"):
        train(config, pairs=emoji_pairs)
