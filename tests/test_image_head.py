"""`model.image_head: none`: the image embedding is the normalised image-tower output itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tiny_configs import tiny_run


def _no_head_model(setting: str = "Lu"):
    from locktune.model import build_model

    config = tiny_run("unused").model
    config.setting, config.image_head = setting, "none"
    return build_model(config, corpus=lambda: iter(["a red square", "a blue circle"] * 50))


def test_image_embedding_is_the_normalised_tower_output():
    from locktune.towers.image import build_image_tower

    torch.manual_seed(0)
    model = _no_head_model().eval()
    pixels = torch.randn(3, 3, 64, 64)
    # Independently: a fresh pretrained tower, its pooled output divided by its own L2 norm.
    tower = build_image_tower("mobilenet_v2", pretrained=True).eval()
    with torch.no_grad():
        features = tower.net.features(pixels).mean(dim=(2, 3))
        expected = features / features.norm(dim=-1, keepdim=True)
        assert torch.equal(model.encode_image(pixels), expected)
        assert torch.equal(model.embed_image_features(features), expected)
    assert not any(name.startswith("image_projection") for name, _ in model.named_parameters())


def test_text_embedding_has_the_image_towers_size():
    model = _no_head_model().eval()
    tokens = model.tokenize(["a red square", "a blue circle"])
    with torch.no_grad():
        text = model.encode_text(tokens["ids"], tokens["mask"])
    assert text.shape == (2, 1280) and model.embed_dim == 1280  # mobilenet_v2's output_dim, not embed_dim
    assert model.text_projection.weight.shape == (1280, 32)


def test_tiny_locked_training_without_head_saves_and_reloads(tmp_path, emoji_pairs):
    import locktune
    from locktune.train.trainer import train

    config = tiny_run(tmp_path / "run", steps=3)
    config.model.image_head = "none"
    result = train(config, pairs=emoji_pairs)
    assert result.steps_done == 3 and all(np.isfinite(result.losses))

    texts = ["a red heart", "a smiling face"]
    images = [emoji_pairs.images.load(i) for i in range(3)]
    from_run = locktune.load(tmp_path / "run")
    folder = from_run.save(tmp_path / "saved")
    assert json.loads((folder / "locktune_model.json").read_text())["embed_dim"] == 1280
    reloaded = locktune.load(folder)
    for model in (from_run, reloaded):
        assert model.embed_dim == 1280
        assert model.encode_text(texts).shape == (2, 1280)
    np.testing.assert_array_equal(reloaded.encode_text(texts), from_run.encode_text(texts))
    np.testing.assert_array_equal(reloaded.encode_image(images), from_run.encode_image(images))
    # The trained model's text side equals the reloaded one's, and its image side is the tower itself.
    with torch.no_grad():
        tokens = result.model.tokenize(texts)
        trained_text = result.model.encode_text(tokens["ids"], tokens["mask"]).numpy()
    np.testing.assert_allclose(reloaded.encode_text(texts), trained_text, atol=1e-6)


def test_bad_image_head_is_a_clear_config_error():
    from locktune.config import load_config
    from locktune.errors import LocktuneError

    with pytest.raises(LocktuneError, match=r"model.image_head 'mpl' is not one of linear, none, mlp, blocks:N "
                                            r"\(did you mean 'mlp'\?\)"):
        load_config(overrides=["model.image_head=mpl"])
    assert load_config(overrides=["model.image_head=none"]).model.image_head == "none"
