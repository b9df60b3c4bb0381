"""Paired seeds: the heads come from their own generators seeded by train.seed, so arms with the same seed
start from the same heads whatever their towers drew from the global generator."""

import torch

from locktune.config import ModelConfig
from locktune.model import build_model

CORPUS = ["a red square", "a blue circle", "a green triangle"] * 30


def model(setting: str, seed: int, text_tower: str = "minilm"):
    config = ModelConfig(setting=setting, image_tower="mobilenet_v2", text_tower=text_tower, image_size=64,
                         text_width=32, text_layers=1, text_heads=2, text_vocab_size=300)
    torch.manual_seed(1234)  # the global stream as the trainer leaves it; the towers draw different amounts
    return build_model(config, corpus=lambda: iter(CORPUS), seed=seed)


def test_same_seed_gives_the_same_heads_across_settings():
    locked, scratch_image = model("LU", 0), model("uU", 0)
    assert torch.equal(locked.image_projection.weight, scratch_image.image_projection.weight)
    assert torch.equal(locked.text_projection.weight, scratch_image.text_projection.weight)
    scratch_text = model("Lu", 0, text_tower="clip")  # text head of another shape; the image head matches
    assert torch.equal(locked.image_projection.weight, scratch_text.image_projection.weight)


def test_other_seeds_give_other_heads_and_the_default_distribution():
    a, b = model("LU", 0), model("LU", 1)
    assert not torch.equal(a.image_projection.weight, b.image_projection.weight)
    assert not torch.equal(a.text_projection.weight, b.text_projection.weight)
    assert not torch.equal(a.image_projection.weight, a.text_projection.weight[:, :a.image_projection.weight.shape[1]])
    weight = a.image_projection.weight
    bound = 1 / weight.shape[1] ** 0.5  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
