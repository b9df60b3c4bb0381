"""The token cache (float16 shards of a locked tower's tokens) and training a blocks:N head from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest
import torch

from tiny_configs import tiny_run


def blocks_run(run_dir, steps: int = 2, **train):
    config = tiny_run(run_dir, steps=steps, train=train)
    config.model.image_head, config.model.head_blocks_width, config.model.head_blocks_heads = "blocks:1", 16, 2
    return config


@pytest.fixture
def counted_tower_calls(monkeypatch):
    """Calls of the bundled tower's forward and tokens (both run its convolutions)."""
    from locktune.towers.image.mobilenet_v2 import MobileNetV2

    calls = {"forward": 0, "tokens": 0}
    for name in calls:
        original = getattr(MobileNetV2, name)

        def spy(self, pixels, _name=name, _original=original):
            calls[_name] += 1
            return _original(self, pixels)

        monkeypatch.setattr(MobileNetV2, name, spy)
    return calls


def test_blocks_head_trains_with_no_image_tower_forward_once_the_token_cache_exists(tmp_path, emoji_pairs,
                                                                                  monkeypatch, counted_tower_calls):
    from locktune.train.trainer import train

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    first = train(blocks_run(tmp_path / "first", steps=1), pairs=emoji_pairs)
    assert counted_tower_calls["tokens"] > 0 and first.image_forward_passes == len(emoji_pairs)
    entries = list((tmp_path / "cache" / "tokens").iterdir())
    assert len(entries) == 1 and (entries[0] / "manifest.json").is_file()
    counted_tower_calls.update(forward=0, tokens=0)
    second = train(blocks_run(tmp_path / "second", steps=1), pairs=emoji_pairs)
    # A finished entry is opened without touching the tower (not even to probe the token shape).
    assert counted_tower_calls == {"forward": 0, "tokens": 0} and second.image_forward_passes == 0
    assert second.losses == first.losses and all(np.isfinite(second.losses))
    assert type(second.model.image_projection).__name__ == "TokenBlocksHead"


def test_cached_tokens_train_as_live_tokens_do(tmp_path, emoji_pairs, monkeypatch):
    """One step from the cache's rows equals one step with the locked tower run live, to float16 storage: with
    the live tokens rounded to float16 as the cache stores them, to float32 rounding."""
    import copy

    from locktune.cache.token_cache import token_cache
    from locktune.model import build_model
    from locktune.train.step import Batch, whole_step
    from locktune.towers.setting import unwrap

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    config = blocks_run(tmp_path / "run")
    net = build_model(config.model, corpus=lambda: [c for caps in emoji_pairs.captions for c in caps], seed=0)
    tower = unwrap(net.image_tower)
    cache = token_cache(tower, net.preprocess, emoji_pairs.images)
    rows = list(range(8))
    pixels = torch.stack([net.preprocess(emoji_pairs.images.load(i)) for i in rows])
    tokens = net.tokenize([emoji_pairs.captions[i][0] for i in rows])
    ids, mask = tokens["ids"], tokens["mask"]

    def step(batch, rounded: bool):
        model = copy.deepcopy(net)
        if rounded:
            inner = unwrap(model.image_tower)
            live = inner.tokens
            monkeypatch.setattr(inner, "tokens", lambda p: live(p).half().float())
        loss = whole_step(model, batch, torch.autocast("cpu", enabled=False))
        return float(loss), model.image_projection.output.weight.grad.clone()

    cached = step(Batch(ids, mask, features=cache.rows(rows)), rounded=False)
    rounded = step(Batch(ids, mask, pixels=pixels), rounded=True)
    live = step(Batch(ids, mask, pixels=pixels), rounded=False)
    assert cached[0] == pytest.approx(rounded[0], rel=1e-6)
    torch.testing.assert_close(cached[1], rounded[1], rtol=1e-5, atol=1e-7)
    assert cached[0] == pytest.approx(live[0], rel=1e-3)
    torch.testing.assert_close(cached[1], live[1], rtol=2e-2, atol=1e-4)


def test_size_is_printed_and_a_cache_too_big_for_the_disk_is_refused(tmp_path, emoji_pairs, monkeypatch, capfd):
    import locktune.cache.token_cache as module
    from locktune.errors import LocktuneError
    from locktune.towers.image import build_image_tower

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    tower = build_image_tower("mobilenet_v2", pretrained=False)
    preprocess = tower.preprocess(64)
    count = len(emoji_pairs.images)  # 96 images x 4 tokens (2 x 2 at 64 px) x 1280 x 2 bytes
    size = count * 4 * 1280 * 2
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(module.shutil, "disk_usage", lambda path: usage(10**9, 0, 100 * 2**20))
    with pytest.raises(LocktuneError) as error:
        module.token_cache(tower, preprocess, emoji_pairs.images, desc="emoji")
    message = str(error.value)
    assert size == 960 * 1024
    assert "\n" not in message and "needs 960.0 KiB" in message and "100.0 MiB free" in message
    assert "96 images x 4 tokens x 1280 x 2 bytes = 960.0 KiB" in capfd.readouterr().err
    assert not (module.token_folder(tower, preprocess, emoji_pairs.images) / "manifest.json").exists()


def test_a_killed_build_resumes_from_its_finished_shards(tmp_path, emoji_pairs, monkeypatch):
    import locktune.cache.token_cache as module
    from locktune.towers.image import build_image_tower

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(module, "SHARD_ROWS", 32)  # 96 images: 3 shards
    tower = build_image_tower("mobilenet_v2", pretrained=False).eval()
    preprocess = tower.preprocess(64)
    computed, original = [], module._compute_shard

    def dies_after_two(tower, preprocess, images, rows, *args, **kwargs):
        if len(computed) == 2:
            raise KeyboardInterrupt
        computed.append(rows.start)
        return original(tower, preprocess, images, rows, *args, **kwargs)

    monkeypatch.setattr(module, "_compute_shard", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        module.token_cache(tower, preprocess, emoji_pairs.images)
    computed.clear()
    monkeypatch.setattr(module, "_compute_shard", lambda *a, **k: (computed.append(a[3].start), original(*a, **k))[1])
    cache = module.token_cache(tower, preprocess, emoji_pairs.images)
    assert computed == [64] and cache.computed and len(cache) == 96
    # The rows are the tower's tokens in float16, in any order asked.
    pixels = torch.stack([preprocess(emoji_pairs.images.load(i)) for i in (70, 3, 40)])
    with torch.no_grad():
        expected = tower.tokens(pixels).half().float()
    torch.testing.assert_close(cache.rows([70, 3, 40]), expected, rtol=0, atol=0)


FRESH = """
import sys, numpy as np, locktune
from PIL import Image
model = locktune.load(sys.argv[1])
np.save(sys.argv[3], model.encode_image(Image.open(sys.argv[2])).numpy())
"""


@pytest.mark.slow  # ~30 s on 2 shared cores: a fresh interpreter imports torch and locktune
def test_a_saved_blocks_model_loads_in_a_fresh_process(tmp_path, emoji_pairs, monkeypatch):
    from locktune.api import LitModel
    from locktune.train.trainer import train

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    net = train(blocks_run(tmp_path / "run"), pairs=emoji_pairs).model.eval()
    model = LitModel(net)
    folder = model.save(tmp_path / "saved")
    assert json.loads((folder / "locktune_model.json").read_text())["model"]["image_head"] == "blocks:1"
    image = tmp_path / "image.png"
    emoji_pairs.images.load(0).save(image)
    out = tmp_path / "fresh.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", FRESH, str(folder), str(image), str(out)], check=True, env=env, timeout=120)
    np.testing.assert_allclose(np.load(out), model.encode_image(image).numpy(), atol=1e-6)


@pytest.mark.slow  # ~8 s: trains twice; the token cache's device path
def test_blocks_training_on_the_fake_device_equals_the_cpu(tmp_path, emoji_pairs, monkeypatch):
    from locktune.runtime import placement
    from locktune.train.trainer import train

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    results = {device: train(blocks_run(tmp_path / device, device=device), pairs=emoji_pairs)
               for device in ("cpu", "fakegpu")}
    assert placement.model_device(results["fakegpu"].model).type == "fakegpu"
    np.testing.assert_allclose(results["fakegpu"].losses, results["cpu"].losses, rtol=1e-3)


def test_a_trained_image_tower_feeds_a_blocks_head_live_without_a_cache(tmp_path, emoji_pairs, monkeypatch):
    from locktune.train.trainer import train

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    config = blocks_run(tmp_path / "run", steps=1)
    config.model.setting = "Uu"
    result = train(config, pairs=emoji_pairs)
    assert result.image_forward_passes > 0 and np.isfinite(result.losses).all()
    assert not (tmp_path / "cache" / "tokens").exists()
