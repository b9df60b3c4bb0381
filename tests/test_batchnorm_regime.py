"""train.batchnorm: recalibrate sets a trained image tower's BN statistics to the exact mean and variance of
their inputs over the selected training images; freeze leaves them as the tower was built."""

import copy

import torch
from torch import nn

from tiny_configs import tiny_run
from locktune.train.batchnorm import batchnorm_layers, recalibration_rows


def run(tmp_path, emoji_pairs, setting, batchnorm, images=24):
    from locktune.train.trainer import train

    config = tiny_run(tmp_path / batchnorm, steps=3, train={"batchnorm": batchnorm, "bn_recalibration_images": images,
                                                              "lr": 1e-3})
    config.model.setting, config.model.image_size = setting, 32
    return train(config, pairs=emoji_pairs), config


def reference_moments(tower: nn.Module, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Float64 mean and unbiased variance of every BN layer's inputs, from forward hooks, over `batches` run
    as recalibration runs them (BN in train mode, everything else in eval mode)."""
    tower = copy.deepcopy(tower).eval()
    layers = batchnorm_layers(tower)
    inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}
    for index, layer in enumerate(layers):
        layer.train()
        layer.register_forward_hook(
            lambda m, args, out, i=index: inputs[i].append(args[0].detach().double().transpose(0, 1).flatten(1)))
    with torch.no_grad():
        for pixels in batches:
            tower(pixels)
    out = []
    for index in range(len(layers)):
        values = torch.cat(inputs[index], dim=1)
        out.append((values.mean(1), values.var(1, unbiased=True)))
    return out


def test_recalibrate_gives_the_inputs_statistics(tmp_path, emoji_pairs):
    result, config = run(tmp_path, emoji_pairs, "uu", "recalibrate")
    assert result.bn_recalibration_images == 24
    rows = recalibration_rows(len(emoji_pairs), 24, config.train.seed)
    preprocess = result.model.preprocess
    pixels = torch.stack([preprocess(emoji_pairs.images.load(i)) for i in rows])
    batches = [pixels[:16], pixels[16:]]  # train.batch_size
    tower = result.model.image_tower
    expected = reference_moments(tower, batches)
    layers = batchnorm_layers(tower)
    assert len(layers) > 10
    for layer, (mean, var) in zip(layers, expected):
        assert torch.allclose(layer.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
        assert torch.allclose(layer.running_var.double(), var, rtol=1e-5, atol=1e-5)
        assert int(layer.num_batches_tracked) == 2


def test_freeze_leaves_the_pretrained_statistics(tmp_path, emoji_pairs):
    from locktune.towers.image import build_image_tower

    pretrained = build_image_tower("mobilenet_v2", pretrained=True)
    result, _ = run(tmp_path, emoji_pairs, "Uu", "freeze")
    assert result.bn_recalibration_images == 0
    trained = result.model.image_tower
    for before, after in zip(batchnorm_layers(pretrained), batchnorm_layers(trained)):
        assert torch.equal(before.running_mean, after.running_mean)
        assert torch.equal(before.running_var, after.running_var)
        assert torch.equal(before.num_batches_tracked, after.num_batches_tracked)
    changed = [not torch.equal(b.weight, a.weight) for b, a in zip(batchnorm_layers(pretrained), batchnorm_layers(trained))]
    assert any(changed), "scale and shift still train"


def test_train_mode_keeps_the_running_averages(tmp_path, emoji_pairs):
    result, _ = run(tmp_path, emoji_pairs, "uu", "train")
    assert result.bn_recalibration_images == 0
    assert all(int(layer.num_batches_tracked) == 3 for layer in batchnorm_layers(result.model.image_tower))
