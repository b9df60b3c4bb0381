"""The one place that decides what a tower letter means.

`L`: pretrained weights, locked (eval mode, no gradients, batch-norm statistics frozen).
`U`: pretrained weights, trained.   `u`: the same architecture, randomly initialised, trained.
Tower builders only know `pretrained: bool`; they never see the letter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from locktune.errors import LocktuneError

LETTERS = {"L": "locked pretrained", "U": "unlocked pretrained", "u": "from scratch"}
VALID_SETTINGS = ["LU", "Lu", "LL", "UU", "Uu", "UL", "uU", "uu", "uL"]


@dataclass(frozen=True)
class TowerSetting:
    image: str
    text: str

    @property
    def image_locked(self) -> bool:
        return self.image == "L"

    @property
    def text_locked(self) -> bool:
        return self.text == "L"

    def __str__(self) -> str:
        return self.image + self.text


def parse_setting(text: str) -> TowerSetting:
    """'LU' -> TowerSetting(image='L', text='U'); anything else is a one-line error listing the valid ones."""
    if not isinstance(text, str) or len(text) != 2 or any(c not in LETTERS for c in text):
        raise LocktuneError(
            f"unknown tower setting '{text}'; valid: {', '.join(VALID_SETTINGS)} "
            "(image letter then text letter: L locked pretrained, U unlocked pretrained, u from scratch)"
        )
    return TowerSetting(image=text[0], text=text[1])


def is_pretrained(letter: str) -> bool:
    return letter in ("L", "U")


class LockedTower(nn.Module):
    """Wraps a tower so it can never train: always eval mode, no gradients, no buffer updates."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower
        self.tower.requires_grad_(False)
        self.tower.eval()

    def train(self, mode: bool = True) -> "LockedTower":
        # Keep the inner tower in eval mode whatever the caller asks: batch norm and dropout stay frozen.
        self.training = mode
        self.tower.eval()
        return self

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.tower(*args, **kwargs)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The locked tower's token outputs (`blocks:N` heads), as untrainable as its pooled output."""
        with torch.no_grad():
            return self.tower.tokens(pixels)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["tower"], name)


def apply_letter(tower: nn.Module, letter: str) -> nn.Module:
    """Lock the tower for `L`; `U` and `u` towers train as built."""
    return LockedTower(tower) if letter == "L" else tower


def unwrap(tower: nn.Module) -> nn.Module:
    return tower.tower if isinstance(tower, LockedTower) else tower
