"""Two real processes (gloo): BN recalibration deals its batches over the processes and all-reduces the
sums, so both end with the statistics one process computes; a two-process run that trains the image tower
(decode once, recalibrate) finishes with the same statistics on both."""

import os

import pytest
import torch

from test_distributed import launch
from locktune.towers.image import build_image_tower
from locktune.train.batchnorm import batchnorm_layers, recalibrate_batchnorm

pytestmark = pytest.mark.slow  # several processes or a long run: `make test-slow`


def _tower_and_pixels():
    torch.manual_seed(3)
    tower = build_image_tower("mobilenet_v2", pretrained=False)
    pixels = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    return tower, pixels


def _statistics(tower) -> list[torch.Tensor]:
    return [t.clone() for layer in batchnorm_layers(tower) for t in (layer.running_mean, layer.running_var)]


def _rank_recalibrate(rank, tmp_path):
    from tiny_configs import tiny_run
    from locktune.data.pairs import load_pairs
    from locktune.train.trainer import train

    tower, pixels = _tower_and_pixels()
    used = recalibrate_batchnorm(tower, lambda rows: pixels[rows], list(range(20)), 8, torch.device("cpu"))
    assert used == 20
    torch.save(_statistics(tower), os.path.join(tmp_path, f"direct{rank}.pt"))
    config = tiny_run(os.path.join(tmp_path, "run"), steps=2, train={"bn_recalibration_images": 24})
    config.model.setting, config.model.image_size = "uu", 32
    result = train(config, pairs=load_pairs(["emoji"], max_pairs_per_source=48))
    assert result.bn_recalibration_images == 24
    torch.save(_statistics(result.model.image_tower), os.path.join(tmp_path, f"trained{rank}.pt"))


def test_two_processes_recalibrate_as_one(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each process runs: convolutions round differently with other thread counts
    try:
        tower, pixels = _tower_and_pixels()
        recalibrate_batchnorm(tower, lambda rows: pixels[rows], list(range(20)), 8, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    one = _statistics(tower)
    launch(_rank_recalibrate, tmp_path)
    for rank in range(2):
        for a, b in zip(one, torch.load(tmp_path / f"direct{rank}.pt")):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.load(tmp_path / "trained0.pt"), torch.load(tmp_path / "trained1.pt")):
        assert torch.equal(a, b)
