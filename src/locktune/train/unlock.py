"""Unlock schedules for a trained image tower: locked for the first steps, then unlocked at once or gradually.

The tower is split into ordered layer groups, input to output.  A module's group is its path cut after
the first numbered component (`net.features.7.conv.0` -> `net.features.7`, `net._blocks.3._bn1` ->
`net._blocks.3`), so each block of a sequential stack is one group; runs of un-numbered modules that hold
weights (a stem before the blocks, a head after them) are one group each.  Order is registration order,
which for these towers is the forward order.  MobileNetV2 gives 19 groups, EfficientNet-Lite0 18.

`apply(step)` is a pure function of the step (so a resumed run is exact): a frozen group gets no
gradients and its modules run in eval mode, so batch-norm statistics and dropout stay as pretrained.
The optimizer must be built before the first `apply`, holding every parameter: AdamW skips (no update,
no weight decay) a parameter whose `.grad` is None, which `zero_grad(set_to_none=True)` leaves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn


@dataclass
class LayerGroup:
    name: str
    modules: list[nn.Module]  # every module in the group, containers included (their train/eval flag)
    parameters: list[nn.Parameter]


def _numbered_prefix(path: str) -> str | None:
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i + 1])
    return None


def layer_groups(tower: nn.Module) -> list[LayerGroup]:
    """The tower's modules and parameters in ordered layer groups, input side first."""
    groups: list[LayerGroup] = []
    by_prefix: dict[str, LayerGroup] = {}
    owner: dict[str, LayerGroup] = {}  # module path -> its group
    previous_unnumbered = False
    for path, module in tower.named_modules():
        prefix = _numbered_prefix(path)
        holds = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
        if prefix is not None:
            if prefix not in by_prefix:
                by_prefix[prefix] = LayerGroup(prefix, [], [])
                groups.append(by_prefix[prefix])
            group, previous_unnumbered = by_prefix[prefix], False
        elif holds:
            if not previous_unnumbered:  # a new run of un-numbered weight-holding modules (stem, head)
                groups.append(LayerGroup(path, [], []))
            group, previous_unnumbered = groups[-1], True
        else:
            # A weightless module inside a grouped one (a stem conv's padding) follows that module's group;
            # containers above the groups (the tower itself, `net.features`) are left to the schedule.
            parent = path.rpartition(".")[0]
            if path and parent in owner:
                owner[path] = owner[parent]
                owner[parent].modules.append(module)
            continue
        owner[path] = group
        group.modules.append(module)
        group.parameters.extend(module.parameters(recurse=False))
    return groups


def unlocked_count(step: int, groups: int, start: int, end: int) -> int:
    """How many groups (from the top) train at `step` (0-based index of the step being taken)."""
    if step < start:
        return 0
    if step >= end:
        return groups
    # Linear from the first step of the ramp (at least one group) to all but the last share at end - 1.
    return min(groups, math.ceil(groups * (step - start + 1) / (end - start + 1)))


class UnlockSchedule:
    """Sets requires_grad and train/eval mode of the image tower's layer groups per step."""

    def __init__(self, tower: nn.Module, start: int, end: int):
        self.tower, self.start, self.end = tower, start, end
        self.groups = layer_groups(tower)
        grouped = {id(m) for g in self.groups for m in g.modules}
        self.containers = [m for m in tower.modules() if id(m) not in grouped]
        # Parameters the tower itself keeps frozen (never used in its forward) stay frozen whatever the step.
        self.trainable = {id(p) for p in tower.parameters() if p.requires_grad}

    def share(self, step: int) -> float:
        """The unlocked share of layer groups at `step`."""
        return unlocked_count(step, len(self.groups), self.start, self.end) / len(self.groups)

    def apply(self, step: int) -> float:
        """Freeze / unfreeze every group for `step`; returns the unlocked share.  Call after model.train()."""
        count = unlocked_count(step, len(self.groups), self.start, self.end)
        first_unlocked = len(self.groups) - count
        for index, group in enumerate(self.groups):
            trains = index >= first_unlocked
            for p in group.parameters:
                p.requires_grad_(trains and id(p) in self.trainable)
            for module in group.modules:
                module.training = trains  # not .train(): children may belong to other groups
        for module in self.containers:
            module.training = count > 0
        return count / len(self.groups)

    def freeze_stateless(self, optimizer_state: dict, prefix: str = "image_tower.") -> None:
        """Before loading a checkpoint's name-keyed optimizer state: groups still frozen when it was written
        have no state there, and the strict loader refuses a trainable parameter without state.  The next
        `apply` sets every flag again."""
        saved = optimizer_state.get("state", {})
        for name, p in self.tower.named_parameters():
            if prefix + name not in saved:
                p.requires_grad_(False)

    def release(self) -> None:
        """Every group trainable again (gradients on); modes are left to the caller's train()/eval()."""
        for group in self.groups:
            for p in group.parameters:
                p.requires_grad_(id(p) in self.trainable)


def image_unlock_schedule(model: nn.Module, start: int, end: int) -> UnlockSchedule | None:
    """The schedule for a TwoTower's trained image tower, or None when it trains from the start (0/0)."""
    if start == 0 and end == 0:
        return None
    return UnlockSchedule(model.image_tower, start, end)
