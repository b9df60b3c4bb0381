"""Image-tower unlock schedules: locked for N steps then unlocked, or unlocked gradually from the top."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_configs import tiny_run


def unlock_run(run_dir, start: int = 0, end: int = 0, steps: int = 4, **train):
    """A tiny run that trains a pretrained MobileNetV2 (U) at 32 px, with a checkpoint after every step."""
    config = tiny_run(run_dir, steps=steps, train={"checkpoint_every": 1, "keep_checkpoints": 100, "log_every": 1,
                                                   "image_unlock_start": start, "image_unlock_end": end, **train})
    config.model.setting, config.model.image_size = "Uu", 32
    return config


def tower_state(run_dir, step: int) -> dict[str, torch.Tensor]:
    from locktune.train.checkpoint import checkpoint_path, load_checkpoint

    state = load_checkpoint(checkpoint_path(run_dir, step))["model"]
    return {k[len("image_tower."):]: v for k, v in state.items() if k.startswith("image_tower.")}


@pytest.fixture(scope="module")
def pretrained() -> dict[str, torch.Tensor]:
    from locktune.towers.image import build_image_tower

    return {k: v.clone() for k, v in build_image_tower("mobilenet_v2", pretrained=True).state_dict().items()}


@pytest.fixture(scope="module")
def groups() -> list[list[str]]:
    """The state-dict keys (parameters and buffers) of each layer group, input side first."""
    from locktune.towers.image import build_image_tower
    from locktune.train.unlock import layer_groups

    tower = build_image_tower("mobilenet_v2", pretrained=True)
    owner = {id(m): g.name for g in layer_groups(tower) for m in g.modules}
    names = {path: owner.get(id(m)) for path, m in tower.named_modules()}
    keys: dict[str, list[str]] = {g.name: [] for g in layer_groups(tower)}
    for key in tower.state_dict():
        keys[names[key.rpartition(".")[0]]].append(key)
    return list(keys.values())


def same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_layer_groups_cover_each_tower_once():
    from locktune.towers.image import build_image_tower
    from locktune.train.unlock import layer_groups

    for name, count in (("mobilenet_v2", 19), ("efficientnet_lite0", 18)):
        tower = build_image_tower(name, pretrained=False)
        found = layer_groups(tower)
        params = [id(p) for g in found for p in g.parameters]
        assert len(found) == count and len(params) == len(set(params)) == len(list(tower.parameters())), name


def test_schedule_counts():
    from locktune.train.unlock import unlocked_count

    assert [unlocked_count(s, 19, 3, 3) for s in range(5)] == [0, 0, 0, 19, 19]
    assert [unlocked_count(s, 19, 0, 0) for s in range(2)] == [19, 19]
    ramp = [unlocked_count(s, 10, 2, 6) for s in range(8)]
    assert ramp == [0, 0, 2, 4, 6, 8, 10, 10]


def test_locked_for_n_steps_then_unlocked(tmp_path, emoji_pairs, pretrained, groups):
    from locktune.train.trainer import train

    result = train(unlock_run(tmp_path, start=2, end=2, steps=4), pairs=emoji_pairs)
    keys = list(pretrained)
    assert any("running_mean" in k for k in keys)
    for step in (1, 2):  # weights, running means and variances, batch counts: all as pretrained
        assert same(tower_state(tmp_path, step), pretrained, keys), step
    for step in (3, 4):  # every group trains from step 2 (0-based) on: all weights and statistics move
        state = tower_state(tmp_path, step)
        assert all(not same(state, pretrained, g) for g in groups), step
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["image_unlocked"] for e in log] == [0.0, 0.0, 1.0, 1.0]
    assert all(p.requires_grad for p in result.model.image_tower.parameters())


def test_gradual_unlock_starts_from_the_top(tmp_path, emoji_pairs, pretrained, groups):
    from locktune.train.trainer import train
    from locktune.train.unlock import unlocked_count

    train(unlock_run(tmp_path, start=1, end=5, steps=4), pairs=emoji_pairs)
    assert [unlocked_count(s, 19, 1, 5) for s in range(3)] == [0, 4, 8]
    state = tower_state(tmp_path, 3)  # after steps 0 (locked), 1 (top 4 groups), 2 (top 8 groups)
    for index, keys in enumerate(groups):
        assert same(state, pretrained, keys) == (index < 19 - 8), index
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["image_unlocked"] for e in log] == [0.0, round(4 / 19, 4), round(8 / 19, 4), round(12 / 19, 4)]


def test_default_schedule_is_todays_behaviour(tmp_path, emoji_pairs):
    from locktune.train.trainer import train
    from locktune.train.unlock import image_unlock_schedule

    def config(run_dir, **keys):
        c = tiny_run(run_dir, steps=3, train=keys)
        c.model.setting, c.model.image_size = "Uu", 32
        return c

    plain = train(config(tmp_path / "plain"), pairs=emoji_pairs)
    zeros = train(config(tmp_path / "zeros", image_unlock_start=0, image_unlock_end=0), pairs=emoji_pairs)
    assert plain.losses == zeros.losses
    for (name, a), b in zip(plain.model.state_dict().items(), zeros.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert image_unlock_schedule(plain.model, 0, 0) is None  # no schedule: the loop is unchanged
    assert "image_unlocked" not in (tmp_path / "plain" / "train_log.jsonl").read_text()


@pytest.mark.parametrize("start,end,stop", [(2, 2, 1), (1, 4, 2)])
def test_resume_across_the_unlock_boundary_is_exact(tmp_path, emoji_pairs, start, end, stop):
    from locktune.train.trainer import train

    whole = train(unlock_run(tmp_path / "whole", start, end), pairs=emoji_pairs)
    first = train(unlock_run(tmp_path / "split", start, end), pairs=emoji_pairs, stop_after=stop)
    assert first.steps_done == stop
    resumed = train(unlock_run(tmp_path / "split", start, end), pairs=emoji_pairs, resume=True)
    assert resumed.losses == whole.losses
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("overrides,message", [
    (["model.setting=UU", "train.steps=10", "train.warmup_steps=2", "train.image_unlock_start=5",
      "train.image_unlock_end=3"], "start <= end"),
    (["model.setting=UU", "train.steps=10", "train.warmup_steps=2", "train.image_unlock_end=11"], r"train.steps \(10\)"),
    (["model.setting=UU", "train.image_unlock_start=-1"], "0 <= start"),
    (["model.setting=LU", "train.image_unlock_start=5", "train.image_unlock_end=5"], "use a 'U.' setting"),
])
def test_bad_schedules_are_clear_config_errors(overrides, message):
    from locktune.config import load_config
    from locktune.errors import LocktuneError

    with pytest.raises(LocktuneError, match=message):
        load_config(overrides=overrides)
    load_config(overrides=["model.setting=uU", "train.steps=10", "train.warmup_steps=2", "train.image_unlock_start=4",
                           "train.image_unlock_end=8"])
