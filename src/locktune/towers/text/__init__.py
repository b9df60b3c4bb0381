"""Text towers by name. Importing this package registers the bundled ones."""

from locktune.towers.text.base import (TEXT_TOWER_KINDS, TEXT_TOWERS, TextTower, build_text_tower,
                                       check_text_tower_name)
from locktune.towers.text import clip_transformer, hf_text, minilm, t5_encoder  # noqa: F401  (registers)

__all__ = ["TEXT_TOWERS", "TEXT_TOWER_KINDS", "TextTower", "build_text_tower", "check_text_tower_name"]
