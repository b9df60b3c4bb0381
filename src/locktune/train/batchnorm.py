"""Batch norm in a trained image tower (`train.batchnorm`): frozen, or recalibrated after the last step.

Why recalibrate: during training each BN layer's running mean and variance are exponential averages over
batches computed with the weights of the moment; with a high learning rate the weights move faster than the
averages follow, so at eval time (which normalises with the running statistics) the tower sees statistics
of an older network.  After the last step `recalibrate_batchnorm` recomputes them with the final weights:
a train-mode forward of the BN layers (everything else in eval mode, so no dropout; no gradients; float32,
no autocast) over a fixed, seeded selection of training images in batches of `train.batch_size`, and each
layer's running statistics set to the exact mean and unbiased variance of its inputs over all those
images (sums in float64 through forward pre-hooks, "precise BN").  That is the limit a cumulative average
(momentum=None) approaches, without its dependence on equal batch sizes.

Under torchrun the batches are dealt round-robin to the processes (each batch whole on one process, as in a
single-process run) and the sums all-reduced, so every process ends with the same statistics.

Freeze keeps every BN layer in eval mode throughout training: running statistics as the tower was built
(pretrained, or the initial ones for a from-scratch tower), scale and shift still trained.
"""

from __future__ import annotations

import torch
from torch import nn

from locktune.runtime import distributed
from locktune.train.step import mix_seed

RECALIBRATION_SALT = 0x42_4E  # "BN": the selection's generator is unrelated to the data order's


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The module's batch-norm layers that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def freeze_batchnorm(module: nn.Module) -> None:
    """Every BN layer in eval mode (call after each model.train() / unlock step, which set modes)."""
    for layer in batchnorm_layers(module):
        layer.training = False


def recalibration_rows(usable: int, count: int, seed: int) -> list[int]:
    """The training rows recalibration reads: `count` of `usable`, a seeded permutation's first ones."""
    generator = torch.Generator().manual_seed(mix_seed(seed, RECALIBRATION_SALT))
    return torch.randperm(usable, generator=generator)[:count].tolist()


class _InputMoments:
    """Float64 per-channel sums of a BN layer's inputs, gathered by a forward pre-hook."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm):
        channels = layer.num_features
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)
        self.handle = layer.register_forward_pre_hook(self)

    def __call__(self, layer, inputs) -> None:
        x = inputs[0].detach().to(torch.float64)
        over = [0, *range(2, x.ndim)]  # every dimension but the channels
        self.sum += x.sum(over).cpu()
        self.squares += x.square().sum(over).cpu()
        self.count += x.numel() // x.shape[1]

    def tensor(self) -> torch.Tensor:
        return torch.cat([self.sum, self.squares, self.count.reshape(1)])


def _modes(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in module.modules()]


@torch.no_grad()
def recalibrate_batchnorm(tower: nn.Module, pixels_of, rows: list[int], batch_size: int,
                          device: torch.device) -> int:
    """Set the running statistics of every BN layer of `tower` from its inputs over `rows` (see the module
    docstring); `pixels_of(rows)` gives the batch's pixels.  Returns the number of images used (0 when the
    tower has no BN layer)."""
    layers = batchnorm_layers(tower)
    if not layers or not rows:
        return 0
    modes = _modes(tower)
    tower.eval()
    for layer in layers:
        layer.train()
    moments = [_InputMoments(layer) for layer in layers]
    batches = [rows[start:start + batch_size] for start in range(0, len(rows), batch_size)]
    try:
        for batch in batches[distributed.rank()::distributed.world_size()]:
            pixels = pixels_of(batch).to(device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, enabled=False):
                tower(pixels)
    finally:
        for moment in moments:
            moment.handle.remove()
        for module, training in modes:
            module.training = training
    for layer, moment in zip(layers, moments):
        packed = moment.tensor()
        if distributed.is_distributed():
            packed = distributed_sum(packed, device)
        channels = layer.num_features
        total, squares, count = packed[:channels], packed[channels:2 * channels], packed[-1]
        mean = total / count
        variance = (squares - count * mean * mean) / max(float(count) - 1.0, 1.0)  # unbiased, as BN keeps it
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(variance.clamp(min=0).to(layer.running_var.dtype))
        if layer.num_batches_tracked is not None:
            layer.num_batches_tracked.fill_(len(batches))
    return len(rows)


def distributed_sum(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum of `values` over the processes (float64, on the collective's device)."""
    import torch.distributed as dist

    moved = values.to(device)
    dist.all_reduce(moved)
    return moved.cpu()
