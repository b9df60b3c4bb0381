"""Image sets: an ordered list of images with stable keys, loadable one at a time in any process."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from locktune.data.decode import decode_image


def load_image_file(path: str | Path) -> Image.Image:
    """PNG/JPEG/... through Pillow, SVG rendered with cairosvg; bounded, upright and 8-bit (`data/decode.py`)."""
    return decode_image(Path(path))


class ImageSet:
    """Subclasses provide `keys` and `load(i)`; the fingerprint covers keys (and file sizes) in order."""

    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for key in self.keys:
            digest.update(key.encode("utf-8", "surrogateescape"))  # file names need not be UTF-8
            digest.update(b"\0")
        return digest.hexdigest()[:16]


class FileImages(ImageSet):
    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [str(p) for p in paths]
        self.keys = list(self.paths)

    def load(self, index: int) -> Image.Image:
        return load_image_file(self.paths[index])

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.paths:
            size = os.stat(path).st_size if os.path.exists(path) else -1
            digest.update(f"{path}\0{size}\0".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()[:16]


class ArrayImages(ImageSet):
    """uint8 images in memory (N, H, W) grey or (N, H, W, 3) colour, e.g. MNIST-style IDX data."""

    def __init__(self, array: np.ndarray, name: str, indices: Sequence[int] | None = None):
        self.array = array
        self.indices = list(range(len(array))) if indices is None else list(indices)
        self.keys = [f"{name}:{i}" for i in self.indices]
        self._content = hashlib.sha256(np.ascontiguousarray(array[self.indices]).tobytes()).hexdigest()[:16]

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.array[self.indices[index]])

    def fingerprint(self) -> str:
        return hashlib.sha256((super().fingerprint() + self._content).encode()).hexdigest()[:16]


class ConcatImages(ImageSet):
    def __init__(self, parts: Sequence[ImageSet]):
        self.parts = list(parts)
        self.keys = [k for p in self.parts for k in p.keys]
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])

    def load(self, index: int) -> Image.Image:
        part = int(np.searchsorted(self._starts, index, side="right") - 1)
        return self.parts[part].load(index - int(self._starts[part]))

    def fingerprint(self) -> str:
        return hashlib.sha256("".join(p.fingerprint() for p in self.parts).encode()).hexdigest()[:16]


class SubsetImages(ImageSet):
    """Some of another set's images, in the given order (e.g. the pairs an evaluation samples)."""

    def __init__(self, base: ImageSet, indices: Sequence[int]):
        self.base, self.indices = base, list(indices)
        self.keys = [base.keys[i] for i in self.indices]

    def load(self, index: int) -> Image.Image:
        return self.base.load(self.indices[index])

    def fingerprint(self) -> str:
        order = ",".join(map(str, self.indices))
        return hashlib.sha256(f"{self.base.fingerprint()}:{order}".encode()).hexdigest()[:16]


def list_image_files(folder: Path, suffixes: set[str]) -> list[Path]:
    """Image files under `folder`, sorted.  Entries named like images that are not readable files (a
    directory called x.jpg, a dangling link) are counted by reason and reported, never dropped silently;
    files that are not decodable images are counted later, by the embedding cache."""
    named = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)
    files = [p for p in named if p.is_file()]
    if len(files) < len(named):
        reasons: dict[str, list[str]] = {}
        for p in named:
            if not p.is_file():
                reason = "dangling link" if p.is_symlink() and not p.exists() else "not a file"
                reasons.setdefault(reason, []).append(str(p.relative_to(folder)))
        counts = ", ".join(f"{len(v)} {k} (first: {v[0]})" for k, v in sorted(reasons.items()))
        print(f"locktune: {folder}: {len(named) - len(files)} entries named like images were skipped: {counts}",
              file=sys.stderr)
    return files
