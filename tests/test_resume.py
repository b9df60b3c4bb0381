"""A run stopped after k steps and resumed gives exactly the losses and weights of an uninterrupted run,
with the whole step and through the gradient cache."""

import pytest
import torch

from locktune.config import RunConfig


def small_config(run_dir, text_tower="minilm", setting="LU", chunk_size=0) -> RunConfig:
    config = RunConfig()
    config.model.setting = setting
    config.model.text_tower = text_tower
    config.model.image_size = 64
    config.model.text_width, config.model.text_layers, config.model.text_heads = 64, 2, 2
    config.model.text_vocab_size = 500
    config.train.steps, config.train.batch_size, config.train.warmup_steps = 6, 16, 2
    config.train.checkpoint_every = 100  # only the stop point and the end write checkpoints
    config.train.chunk_size = chunk_size
    config.run_dir = str(run_dir)
    return config


def run_split(tmp_path, pairs, **kw):
    from locktune.train.trainer import train

    whole = train(small_config(tmp_path / "whole", **kw), pairs=pairs)
    first = train(small_config(tmp_path / "split", **kw), pairs=pairs, stop_after=3)
    assert first.steps_done == 3 and not (tmp_path / "split" / "model").exists()
    second = train(small_config(tmp_path / "split", **kw), pairs=pairs, resume=True)
    return whole, second


def test_resume_gives_identical_losses_and_weights(tmp_path, emoji_pairs):
    whole, resumed = run_split(tmp_path, emoji_pairs)
    assert resumed.steps_done == 6
    assert resumed.losses == whole.losses, "dropout RNG, data order and optimizer state all restored"
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_with_from_scratch_clip_tower_restores_its_tokenizer(tmp_path, emoji_pairs):
    whole, resumed = run_split(tmp_path, emoji_pairs, text_tower="clip", setting="Lu")
    assert resumed.losses == whole.losses


@pytest.mark.slow  # ~24 s; test_resume_gives_identical_losses_and_weights stays fast
def test_resume_with_gradient_cache_and_dropout_is_exact(tmp_path, emoji_pairs):
    """MiniLM (dropout 0.1) through the gradient cache: each chunk's masks are seeded from the step, so a
    resumed run draws the same ones."""
    whole, resumed = run_split(tmp_path, emoji_pairs, chunk_size=4)
    assert resumed.losses == whole.losses
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
