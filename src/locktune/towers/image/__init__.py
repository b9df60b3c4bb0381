"""Image towers by name. Importing this package registers the bundled ones."""

from locktune.towers.image.base import IMAGE_TOWERS, ImageTower, build_image_tower
from locktune.towers.image import efficientnet_lite, mobilenet_v2  # noqa: F401  (registers)

__all__ = ["IMAGE_TOWERS", "ImageTower", "build_image_tower"]
