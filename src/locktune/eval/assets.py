"""Data files carried with locktune: ImageNet-1k class names and CLIP's prompt-template sets."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from locktune.errors import LocktuneError

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@lru_cache(maxsize=None)
def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (CLIP's cleaned names, as open_clip carries them)."""
    return (ASSETS / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()


@lru_cache(maxsize=None)
def _template_sets() -> dict[str, list[str]]:
    return json.loads((ASSETS / "prompt_templates.json").read_text(encoding="utf-8"))


def templates(name: str) -> list[str]:
    """A named prompt-template set ('imagenet' is CLIP's 80, 'imagenet_simple' its 7); '{}' is the class."""
    sets = _template_sets()
    if name not in sets or name.startswith("_"):  # '_source' is a note, not a set
        raise LocktuneError(f"unknown prompt-template set '{name}'; valid: {', '.join(sorted(k for k in sets if not k.startswith('_')))}")
    return list(sets[name])
