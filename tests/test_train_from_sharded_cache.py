"""Training reads a sharded embedding cache: no image decoding, no source loading, and the same steps
as training from the in-memory cache of the same (float16-rounded) vectors."""

import pytest
import torch

from locktune.errors import LocktuneError
from tiny_configs import tiny_run


def tiny(run_dir, **data):
    return tiny_run(run_dir, steps=4, data=data)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, emoji_pairs):
    from locktune.cache.sharded import build_sharded_cache
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    tower = build_image_tower("mobilenet_v2", pretrained=True)
    folder = tmp_path_factory.mktemp("sharded")
    build_sharded_cache(tower, preprocess_for(tower, 64), emoji_pairs, folder, shard_size=40, batch_size=16, workers=0)
    return folder


def test_training_from_a_sharded_cache_matches_the_in_memory_cache(tmp_path, emoji_pairs, sharded, monkeypatch):
    from locktune.cache import image_side
    from locktune.cache.sharded import ShardedCache
    from locktune.data import images
    from locktune.train import trainer

    # Reference: the in-memory path, fed exactly the vectors the shards hold (float16-rounded).
    stored = ShardedCache.open(sharded).rows(range(len(emoji_pairs)))
    monkeypatch.setattr(image_side, "cached_features", lambda *a, **k: type("C", (), {
        "features": stored, "valid": torch.ones(len(stored), dtype=torch.bool), "computed": False, "failed": {}})())
    reference = trainer.train(tiny(tmp_path / "ref"), pairs=emoji_pairs)
    monkeypatch.undo()

    def no_decoding(*args, **kwargs):
        raise AssertionError("training from a sharded cache must not decode images")

    monkeypatch.setattr(images.FileImages, "load", no_decoding)
    from_shards = trainer.train(tiny(tmp_path / "shards", embedding_cache=str(sharded), sources=["nonexistent"]))
    assert from_shards.image_forward_passes == 0
    assert from_shards.losses == reference.losses
    for name, value in reference.model.state_dict().items():
        assert torch.equal(value, from_shards.model.state_dict()[name]), name


def test_a_cache_from_another_preprocessing_is_refused(tmp_path, sharded):
    from locktune.train.trainer import train

    config = tiny(tmp_path, embedding_cache=str(sharded))
    config.model.image_size = 96
    with pytest.raises(LocktuneError, match="was computed with another preprocess"):
        train(config)
    config.model.image_size, config.model.setting = 64, "uu"
    with pytest.raises(LocktuneError, match="trains the image tower"):
        train(config)
