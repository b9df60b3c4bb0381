"""Image index: a folder of images embedded once, searched by text or by image."""

from locktune.index.store import ImageIndex, top_k

__all__ = ["ImageIndex", "top_k"]
