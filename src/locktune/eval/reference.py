"""Reference points beside a model's numbers: chance, and the image tower's own supervised ImageNet
classifier where a benchmark's classes map to ImageNet classes.

The towers drop their classifier heads; the head is read back from the same weight file and applied to
the pooled features the embedding cache stores, so the reference sees exactly the pixels (size,
padding) the model sees.  Only for a locked pretrained tower: an unlocked one's features have moved.
"""

from __future__ import annotations

import torch

from locktune.towers.setting import unwrap

# Tower name -> the weight-file keys of its ImageNet classifier (weight, bias).
HEAD_KEYS = {"efficientnet_lite0": ("_fc.weight", "_fc.bias"),
             "mobilenet_v2": ("classifier.1.weight", "classifier.1.bias")}


def supervised_head(model) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight [1000, D], bias [1000]) of the image tower's ImageNet classifier, or None if it has none."""
    tower = unwrap(model.image_tower)
    keys = HEAD_KEYS.get(tower.name)
    if keys is None or not model.setting.image_locked or getattr(tower, "weights_file", None) is None:
        return None
    state = torch.load(tower.weights_file, map_location="cpu", weights_only=True)
    return state[keys[0]].float(), state[keys[1]].float()


def supervised_top1(head: tuple[torch.Tensor, torch.Tensor], features: torch.Tensor, labels: torch.Tensor,
                    imagenet_indices: list[list[int]]) -> float:
    """Top-1 of the ImageNet classifier, a benchmark class scoring as its best ImageNet class."""
    weight, bias = head
    logits = features.float() @ weight.T + bias
    per_class = torch.stack([logits[:, idx].max(dim=1).values for idx in imagenet_indices], dim=1)
    return float((per_class.argmax(dim=1) == labels).double().mean())
