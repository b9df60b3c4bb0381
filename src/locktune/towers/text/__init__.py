"""Text towers by name. Importing this package registers the bundled ones."""

from locktune.towers.text.base import TEXT_TOWERS, TextTower, build_text_tower
from locktune.towers.text import clip_transformer, minilm, t5_encoder  # noqa: F401  (registers)

__all__ = ["TEXT_TOWERS", "TextTower", "build_text_tower"]
