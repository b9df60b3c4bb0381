"""The text-embedding cache (`cache/text_side.py`, issue 27 item 1): with both towers locked (`LL`) and both
caches there, training runs no tower forward at all; the cached vectors are the tower's own (float64 reference);
training from them equals training with the live text forward; the sharded cache carries them and refuses
another text tower; resume is exact; the fake device places every tensor."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from hf_tiny import save_text
from locktune.errors import LocktuneError
from locktune.towers.setting import unwrap
from tiny_configs import tiny_run


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny random BERT saved as `save_pretrained` leaves it (dropout 0.1: locked, it must draw none)."""
    return save_text("bert", tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory):
    return save_text("bert", tmp_path_factory.mktemp("bert-other"), seed=1)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache folder of this test's own, for tests that count what a cold cache computes."""
    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for this module's other tests: the image entry is computed once for all of them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOCKTUNE_CACHE", str(tmp_path_factory.mktemp("text-cache")))
        yield


def ll_run(run_dir, bert, steps=4, **train):
    config = tiny_run(run_dir, steps=steps, train=train)
    config.model.setting, config.model.text_tower = "LL", f"hf:{bert}"
    return config


@pytest.fixture
def forwards(monkeypatch):
    """Counts every tower forward (wrapper and inner tower, both sides) of every model training builds, from the
    moment it is built (the text tower's own probe at build time is not counted)."""
    import locktune.train.trainer as trainer

    counts = {"image": 0, "text": 0}
    build = trainer.build_model

    def counted(*args, **kwargs):
        model = build(*args, **kwargs)
        for side, tower in (("image", model.image_tower), ("text", model.text_tower)):
            for module in {id(tower): tower, id(unwrap(tower)): unwrap(tower)}.values():
                module.register_forward_pre_hook(lambda *_, side=side: counts.__setitem__(side, counts[side] + 1))
        return model

    monkeypatch.setattr(trainer, "build_model", counted)
    return counts


def test_ll_with_both_caches_runs_no_tower_forward(tmp_path, emoji_pairs, bert, own_cache, forwards):
    from locktune.train.trainer import train

    first = train(ll_run(tmp_path / "first", bert, steps=2), pairs=emoji_pairs)  # fills both caches
    assert forwards["text"] > 0 and first.image_forward_passes == len(emoji_pairs.images)
    forwards.update(image=0, text=0)
    again = train(ll_run(tmp_path / "again", bert, steps=2), pairs=emoji_pairs)
    assert forwards == {"image": 0, "text": 0}, "an LL step from two caches runs only the heads"
    assert again.image_forward_passes == 0 and again.losses == first.losses
    config = ll_run(tmp_path / "live", bert, steps=2)
    config.data.text_cache = False
    train(config, pairs=emoji_pairs)
    assert forwards["text"] >= 2 and forwards["image"] == 0, "data.text_cache=false: the tower runs every step"


def test_cached_vectors_are_the_towers_own(bert, emoji_pairs, shared_cache):
    """Every caption's cached row against the tower run alone on that caption, untrimmed, in float64."""
    from locktune.cache.text_side import cached_text_features
    from locktune.config import ModelConfig
    from locktune.model import build_model

    model = build_model(ModelConfig(setting="LL", text_tower=f"hf:{bert}", image_tower="mobilenet_v2", image_size=64))
    captions = emoji_pairs.captions[:12]
    cached = cached_text_features(model.text_tower, captions)
    assert cached.computed == sum(len(c) for c in captions) and cached.features.dtype == torch.float32
    tower = unwrap(model.text_tower).double()
    flat = [c for caps in captions for c in caps]
    with torch.no_grad():
        reference = torch.cat([tower(t["ids"], t["mask"]) for t in map(lambda c: tower.tokenize([c]), flat)])
    np.testing.assert_allclose(cached.features.double().numpy(), reference.numpy(), rtol=0, atol=2e-5)
    # Rows as the batch plan asks for them: pair p's caption (draw % its captions).
    pairs, draws = [3, 0, 11, 3], [0, 5, 2, 1]
    expected = [cached.offsets[p] + d % len(captions[p]) for p, d in zip(pairs, draws)]
    assert torch.equal(cached.rows(pairs, draws), cached.features[expected])
    again = cached_text_features(model.text_tower, captions)
    assert again.computed == 0 and torch.equal(again.features, cached.features)


def test_a_killed_computation_resumes_from_its_finished_blocks(bert, emoji_pairs, own_cache, monkeypatch):
    import locktune.cache.text_side as text_side
    from locktune.config import ModelConfig
    from locktune.model import build_model

    model = build_model(ModelConfig(setting="LL", text_tower=f"hf:{bert}", image_tower="mobilenet_v2", image_size=64))
    monkeypatch.setattr(text_side, "BLOCK", 50)
    captions = emoji_pairs.captions
    total = sum(len(c) for c in captions)
    real, calls = text_side.embed_captions, []

    def dies_on_the_second_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(text_side, "embed_captions", dies_on_the_second_block)
    with pytest.raises(KeyboardInterrupt):
        text_side.cached_text_features(model.text_tower, captions)
    monkeypatch.setattr(text_side, "embed_captions", real)
    resumed = text_side.cached_text_features(model.text_tower, captions)
    assert resumed.computed == total - 50, "the finished first block is not computed again"
    monkeypatch.setattr(text_side, "BLOCK", 8192)
    fresh = text_side.cached_text_features(model.text_tower, captions, precision="fp32", desc="x",
                                           recompute_corrupt=False)
    assert fresh.computed == 0  # the same entry: the block size is no part of its identity
    whole = text_side.embed_captions(model.text_tower, [c for caps in captions for c in caps])
    torch.testing.assert_close(resumed.features, whole, rtol=0, atol=1e-6)


def test_ll_from_the_text_cache_trains_as_the_live_forward(tmp_path, emoji_pairs, bert, shared_cache):
    """Same seed, same pairs and captions: the whole step and the gradient-cached step from the text cache give
    the live text forward's losses and weights to float rounding (locked towers draw no dropout)."""
    from locktune.train.trainer import train

    live = ll_run(tmp_path / "live", bert, steps=3)
    live.data.text_cache = False
    reference = train(live, pairs=emoji_pairs)
    for chunk in (0, 4):
        cached = train(ll_run(tmp_path / f"cached-{chunk}", bert, steps=3, chunk_size=chunk), pairs=emoji_pairs)
        np.testing.assert_allclose(cached.losses, reference.losses, rtol=1e-5)
        for (name, a), b in zip(cached.model.state_dict().items(), reference.model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_resume_of_ll_from_caches_is_exact(tmp_path, emoji_pairs, bert, shared_cache):
    from locktune.train.trainer import train

    whole = train(ll_run(tmp_path / "whole", bert, steps=4), pairs=emoji_pairs)
    first = train(ll_run(tmp_path / "split", bert, steps=4), pairs=emoji_pairs, stop_after=2)
    assert first.steps_done == 2
    resumed = train(ll_run(tmp_path / "split", bert, steps=4), pairs=emoji_pairs, resume=True)
    assert resumed.losses == whole.losses
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.slow  # ~16 s: the real CLI builds two sharded caches
def test_sharded_cache_holds_text_vectors_and_refuses_another_text_tower(tmp_path, emoji_pairs, bert, other_bert,
                                                                          shared_cache, forwards):
    from locktune.cache.sharded import ShardedCache, build_sharded_cache
    from locktune.cache.text_side import embed_captions, text_identity
    from locktune.cli import main
    from locktune.config import ModelConfig
    from locktune.model import build_model
    from locktune.train.trainer import train

    model = build_model(ModelConfig(setting="LL", text_tower=f"hf:{bert}", image_tower="mobilenet_v2", image_size=64))
    image, text = unwrap(model.image_tower), unwrap(model.text_tower)
    folder = tmp_path / "sharded"
    assert main(["embed", "--sharded", str(folder), "--shard-size", "40", "model.setting=LL",
                 f"model.text_tower=hf:{bert}", "model.image_tower=mobilenet_v2", "model.image_size=64",
                 "data.sources=[emoji]", "data.max_pairs_per_source=96", "data.image_workers=0",
                 "train.device=cpu"]) == 0
    cache = ShardedCache.open(folder, verify=True)
    assert cache.text_identity == text_identity(text) and cache.manifest["text"]["max_len"] == 16
    rows, draws = [0, 41, 95, 41], [0, 7, 1, 2]
    picked = [emoji_pairs.captions[r][d % len(emoji_pairs.captions[r])] for r, d in zip(rows, draws)]
    with torch.no_grad():
        reference = torch.cat([text.double()(t["ids"], t["mask"]) for t in map(lambda c: text.tokenize([c]), picked)])
    text.float()
    for access in ("pread", "mmap"):
        got = ShardedCache.open(folder, access=access).text_rows(rows, draws)
        torch.testing.assert_close(got.double(), reference, rtol=2e-3, atol=2e-3)  # float16 shards

    # Resumable: a shard whose text vectors are gone is computed again, the others are kept.
    (folder / "shards" / "00001.textvec.npy").unlink()
    calls = []
    build_sharded_cache(image, model.preprocess, emoji_pairs, folder, shard_size=40, workers=0,
                        text_tower=_Counting(text, calls))
    assert len(calls) == 1 and (folder / "shards" / "00001.textvec.npy").is_file()

    config = ll_run(tmp_path / "run", bert, steps=3)
    config.data.embedding_cache = str(folder)
    forwards.update(image=0, text=0)
    result = train(config)
    assert forwards == {"image": 0, "text": 0} and len(result.losses) == 3
    config = ll_run(tmp_path / "other", other_bert, steps=3)
    config.data.embedding_cache = str(folder)
    with pytest.raises(LocktuneError, match="holds the text vectors of another text tower"):
        train(config)
    assert embed_captions(text, ["a cat"]).shape == (1, text.output_dim)


class _Counting(torch.nn.Module):
    """The tower, counting the batches of captions it embeds (what a rebuilt shard costs)."""

    def __init__(self, tower, calls: list):
        super().__init__()
        self.tower, self.calls, self.name, self.max_len = tower, calls, tower.name, tower.max_len
        self.pool, self.output_dim = tower.pool, tower.output_dim

    def weights_fingerprint(self) -> str:
        return self.tower.weights_fingerprint()

    def tokenize(self, texts):
        self.calls.append(len(texts))
        return self.tower.tokenize(texts)

    def forward(self, ids, mask):
        return self.tower(ids, mask)


def test_text_cache_on_the_fake_device(tmp_path, emoji_pairs, bert, shared_cache, monkeypatch):
    """Computed on the device (a misplaced tensor raises there) it holds the CPU's vectors, and LL read from the
    caches trains on the device as on the CPU."""
    from locktune.cache.text_side import cached_text_features
    from locktune.config import ModelConfig
    from locktune.model import build_model
    from locktune.runtime import placement
    from locktune.train.trainer import train

    model = build_model(ModelConfig(setting="LL", text_tower=f"hf:{bert}", image_tower="mobilenet_v2", image_size=64))
    computed = {}
    for device in ("fakegpu", "cpu"):
        with monkeypatch.context() as patch:
            patch.setenv("LOCKTUNE_CACHE", str(tmp_path / f"cache-{device}"))
            computed[device] = cached_text_features(model.to(device).text_tower, emoji_pairs.captions[:24])
        assert computed[device].computed and computed[device].features.device.type == "cpu"
    torch.testing.assert_close(computed["fakegpu"].features, computed["cpu"].features, rtol=1e-5, atol=1e-6)
    results = {device: train(ll_run(tmp_path / device, bert, steps=2, device=device), pairs=emoji_pairs)
               for device in ("fakegpu", "cpu")}
    assert placement.model_device(results["fakegpu"].model).type == "fakegpu"
    np.testing.assert_allclose(results["fakegpu"].losses, results["cpu"].losses, rtol=1e-5)


def _rank_text_cache(rank, tmp_path, bert):
    import locktune.cache.text_side as text_side
    from locktune.data.pairs import load_pairs
    from locktune.model.two_tower import text_tower_args
    from locktune.config import ModelConfig
    from locktune.towers.text import build_text_tower

    os.environ["LOCKTUNE_CACHE"] = os.path.join(tmp_path, "cache-two")
    text_side.BLOCK = 30
    tower = build_text_tower(f"hf:{bert}", text_tower_args(ModelConfig(), pretrained=True))
    result = text_side.cached_text_features(tower, load_pairs(["emoji"], max_pairs_per_source=96).captions)
    torch.save({"computed": result.computed, "features": result.features}, os.path.join(tmp_path, f"rank{rank}.pt"))


@pytest.mark.slow
def test_text_cache_split_over_two_ranks_equals_one(tmp_path, emoji_pairs, bert, monkeypatch):
    """Under torchrun the blocks are dealt over the ranks, rank 0 assembles the entry, and every rank reads the
    same rows as one process computes (bit for bit: the same blocks, one thread each)."""
    import locktune.cache.text_side as text_side
    from locktune.model.two_tower import text_tower_args
    from locktune.config import ModelConfig
    from locktune.towers.text import build_text_tower
    from test_distributed import launch

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache-one"))
    monkeypatch.setattr(text_side, "BLOCK", 30)
    tower = build_text_tower(f"hf:{bert}", text_tower_args(ModelConfig(), pretrained=True))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = text_side.cached_text_features(tower, emoji_pairs.captions)
    finally:
        torch.set_num_threads(threads)
    launch(_rank_text_cache, tmp_path, str(bert))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert all(r["computed"] == one.computed for r in ranks)
    assert all(torch.equal(r["features"], one.features) for r in ranks)
    assert sorted(p.name for p in (tmp_path / "cache-two" / "text-embeddings").iterdir()) == \
        sorted(p.name for p in one.path.parent.iterdir()), "the same entry, no part files left"


def test_a_damaged_text_cache_entry_is_an_error_or_recomputed(bert, emoji_pairs, own_cache, capsys):
    """The text side reads a finished entry through the image side's rule (`read_finished_entry`): damaged, it
    is one error naming the file, or with recompute_corrupt it is computed again and says so."""
    from locktune.cache.text_side import cached_text_features
    from locktune.config import ModelConfig
    from locktune.errors import LocktuneError
    from locktune.model import build_model

    model = build_model(ModelConfig(setting="LL", text_tower=f"hf:{bert}", image_tower="mobilenet_v2", image_size=64))
    captions = emoji_pairs.captions[:6]
    first = cached_text_features(model.text_tower, captions)
    array = first.path
    array.write_bytes(array.read_bytes()[:-16])  # cut short
    with pytest.raises(LocktuneError, match=r"^text cache entry '.*' is damaged .* data.recompute_corrupt_cache=true"):
        cached_text_features(model.text_tower, captions)
    again = cached_text_features(model.text_tower, captions, recompute_corrupt=True)
    assert again.computed == sum(len(c) for c in captions) and torch.equal(again.features, first.features)
    assert "recomputing damaged text cache entry" in capsys.readouterr().err
