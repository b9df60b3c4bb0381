"""What the letters L/U/u mean: starting weights, and a locked tower that provably never changes."""

import pytest
import torch

from locktune.config import ModelConfig, RunConfig
from locktune.errors import LocktuneError
from locktune.model import build_model
from locktune.towers.image import build_image_tower
from locktune.towers.image.mobilenet_v2 import MobileNetV2Net, weights_path
from locktune.towers.setting import LockedTower, parse_setting, unwrap
from locktune.towers.text.minilm import model_folder


def tiny_config(tmp_path, setting: str, steps: int, batch_size: int) -> RunConfig:
    config = RunConfig()
    config.model.setting = setting
    config.model.image_size = 64
    config.train.steps, config.train.batch_size, config.train.warmup_steps = steps, batch_size, 1
    config.run_dir = str(tmp_path / "run")
    return config


def test_unknown_setting_lists_valid_ones():
    with pytest.raises(LocktuneError, match="valid: LU, Lu, LL, UU, Uu, UL, uU, uu, uL"):
        parse_setting("LX")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_image_tower_U_is_package_weights_u_is_random(name):
    pretrained = build_image_tower(name, pretrained=True)
    scratch = build_image_tower(name, pretrained=False)
    if name == "mobilenet_v2":
        file_state = torch.load(weights_path(), weights_only=True)
    else:
        file_state = torch.load(pretrained.weights_file, weights_only=True)
    own = {k.split("net.", 1)[1]: v for k, v in pretrained.state_dict().items()}
    shared = [k for k in own if k in file_state]
    assert len(shared) == len(own), "every tower tensor comes from the weight file"
    assert all(torch.equal(own[k], file_state[k]) for k in shared)
    scratch_state = scratch.state_dict()
    assert scratch_state.keys() == pretrained.state_dict().keys()
    assert all(scratch_state[k].shape == v.shape for k, v in pretrained.state_dict().items())
    weights = [k for k in own if k.endswith("weight") and own[k].ndim == 4]
    assert not any(torch.equal(scratch_state["net." + k], own[k]) for k in weights)


def test_mobilenet_weights_really_loaded_classify_imagenet_samples():
    """The file's ImageNet classifier on our module gets the 20 ImageNet sample photos foolbox ships (labels
    from their file names) mostly right: 18 of 20 measured; random weights get 0 (chance is 1 in 1,000)."""
    import numpy as np
    from PIL import Image

    from locktune.eval.benchmarks.foolbox_samples import _sample

    paths, labels = _sample("imagenet")
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    pixels = torch.stack([(torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((224, 224)), np.float32)
                                            / 255).permute(2, 0, 1) - mean) / std for p in paths])
    net = MobileNetV2Net()
    net.load_state_dict(torch.load(weights_path(), weights_only=True), strict=True)
    with torch.no_grad():
        right = int((net.eval()(pixels).argmax(-1) == torch.tensor(labels)).sum())
        wrong = int((MobileNetV2Net().eval()(pixels).argmax(-1) == torch.tensor(labels)).sum())
    assert len(labels) == 20 and right >= 15 and wrong <= 2, (right, wrong)


def test_text_tower_U_is_package_weights_u_is_random():
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(model_folder()).state_dict()
    u = build_model(ModelConfig(setting="Lu")).text_tower.encoder.state_dict()
    U = build_model(ModelConfig(setting="LU")).text_tower.encoder.state_dict()
    assert set(reference) - set(U) == {"pooler.dense.weight", "pooler.dense.bias"}  # pooler unused, dropped
    assert all(torch.equal(U[k], reference[k]) for k in U)
    assert u.keys() == U.keys()
    assert not torch.equal(u["embeddings.word_embeddings.weight"], reference["embeddings.word_embeddings.weight"])


def test_clip_tower_refuses_pretrained_letters():
    with pytest.raises(LocktuneError, match="no pretrained weights"):
        build_model(ModelConfig(setting="LU", text_tower="clip"), corpus=lambda: ["a cat"])


def test_locked_tower_stays_in_eval_mode_without_gradients():
    model = build_model(ModelConfig(setting="LL", image_size=64))
    model.train()
    assert isinstance(model.image_tower, LockedTower) and isinstance(model.text_tower, LockedTower)
    assert not unwrap(model.image_tower).training and not unwrap(model.text_tower).training
    assert not any(p.requires_grad for p in model.image_tower.parameters())
    assert model.image_projection.weight.requires_grad


def test_locked_image_tower_bit_identical_after_training_unlocked_text(tmp_path, emoji_pairs):
    """LU trained for real steps: image tower (weights and batch-norm buffers) unchanged, text tower changed."""
    from locktune.train.trainer import train

    config = tiny_config(tmp_path, "LU", steps=3, batch_size=16)
    before = {k: v.clone() for k, v in build_model(config.model).image_tower.state_dict().items()}
    result = train(config, pairs=emoji_pairs)
    after = result.model.image_tower.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "locked weights and BN statistics unchanged"
    text_before = build_model(config.model).text_tower.state_dict()
    assert any(not torch.equal(text_before[k], v) for k, v in result.model.text_tower.state_dict().items())


def test_locked_tower_unchanged_when_run_on_pixels_in_train_mode(tmp_path, emoji_pairs):
    """UL: the locked text tower runs forward every step in a model in train mode; it must stay
    bit-identical while the unlocked image tower trains on decoded pixels."""
    from locktune.train.trainer import train

    config = tiny_config(tmp_path, "UL", steps=2, batch_size=8)
    config.model.image_tower = "mobilenet_v2"
    before = {k: v.clone() for k, v in build_model(config.model).text_tower.state_dict().items()}
    result = train(config, pairs=emoji_pairs)
    after = result.model.text_tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.image_forward_passes == 16


def test_locked_image_tower_in_train_mode_gets_no_gradient_and_equals_an_eval_forward():
    """LU in train mode: after a backward no image-tower parameter has a gradient (the projection has one),
    batch-norm statistics are unchanged, and the embedding equals a float64 forward of the weight file's
    network in eval mode (a tower run with batch statistics, or other weights, would not)."""
    model = build_model(ModelConfig(setting="LU", image_tower="mobilenet_v2", image_size=64))
    model.train()
    before = {k: v.clone() for k, v in model.image_tower.state_dict().items()}
    pixels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    emb = model.encode_image(pixels)
    (emb * torch.randn(emb.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert all(p.grad is None for p in model.image_tower.parameters())
    assert model.image_projection.weight.grad is not None and model.image_projection.weight.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in model.image_tower.state_dict().items())

    net = MobileNetV2Net()
    net.load_state_dict(torch.load(weights_path(), weights_only=True))
    with torch.no_grad():
        features = net.double().eval().pooled(pixels.double())
        reference = torch.nn.functional.normalize(features @ model.image_projection.weight.double().T, dim=-1)
    assert torch.allclose(emb.detach().double(), reference, atol=1e-5), (emb.detach().double() - reference).abs().max()
