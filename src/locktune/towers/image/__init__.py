"""Image towers by name. Importing this package registers the bundled ones."""

from locktune.towers.image.base import (IMAGE_TOWER_KINDS, IMAGE_TOWERS, ImageTower, build_image_tower,
                                        check_image_tower_name)
from locktune.towers.image import efficientnet_lite, hf_vision, mobilenet_v2  # noqa: F401  (registers)
from locktune.towers.image import timm_tower, open_clip_tower  # noqa: F401  (registers; import lazily)

__all__ = ["IMAGE_TOWERS", "IMAGE_TOWER_KINDS", "ImageTower", "build_image_tower", "check_image_tower_name"]
