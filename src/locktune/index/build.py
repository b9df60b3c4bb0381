"""`locktune index FOLDER`: embed a folder of images into a searchable index with thumbnails.

A locked image tower goes through the embedding cache, so indexing a folder twice (or a folder the
model was evaluated on) runs no image forward passes the second time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from locktune.errors import LocktuneError
from locktune.index.store import INDEX_FORMAT, THUMBS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".svg", ".tif", ".tiff"}
THUMB_SIZE = 192


def list_images(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted so the index order is stable."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def default_labels(paths: Sequence[Path], root: Path) -> list[str]:
    """A label vocabulary from the collection itself: file stems and folder names, made readable."""
    words = set()
    for path in paths:
        for part in [path.stem, *path.relative_to(root).parent.parts]:
            text = re.sub(r"[_\-.]+", " ", part).strip().lower()
            if text and not text.isdigit():
                words.add(text)
    return sorted(words)


def _image_embeddings(net, paths: list[Path]) -> tuple[np.ndarray, dict[str, str]]:
    from locktune.cache.embedding_cache import cached_features, compute_features
    from locktune.data.images import FileImages
    from locktune.towers.setting import LockedTower

    images = FileImages(paths)
    if isinstance(net.image_tower, LockedTower):
        result = cached_features(net.image_tower, net.preprocess, images, desc="indexing images")
        features, failed = result.features, result.failed
    else:
        # An unlocked tower was trained: its features are not the cached pretrained ones.
        features, failed = compute_features(net.image_tower, net.preprocess, images, desc="indexing images")
    with torch.inference_mode():
        safe = torch.nan_to_num(features)  # unreadable rows are dropped below; keep NaN out of the matmul
        embeddings = net.embed_image_features(safe).float().numpy()
    return embeddings, failed


def _thumbnail(path: Path, out: Path) -> bool:
    from locktune.data.images import load_image_file

    try:
        image = load_image_file(path)
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        if image.mode in ("RGBA", "LA", "PA", "P"):  # transparency -> white, as the model sees it
            image = image.convert("RGBA")
            canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(canvas, image)
        image.convert("RGB").save(out, "JPEG", quality=85)
        return True
    except Exception:
        return False


def build_index(model, folder: str | Path, out: str | Path, labels: Sequence[str] | None = None) -> dict:
    """Index every image under `folder` into `out`; returns the index's metadata.

    `model` is a `locktune.api.LitModel`.  `labels` is the vocabulary for image -> text (default: the
    collection's file and folder names).
    """
    folder, out = Path(folder).resolve(), Path(out)
    if not folder.is_dir():
        raise LocktuneError(f"'{folder}' is not a folder of images")
    paths = list_images(folder)
    if not paths:
        raise LocktuneError(f"no images under '{folder}' (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    (out / THUMBS).mkdir(parents=True, exist_ok=True)
    embeddings, failed = _image_embeddings(model.net, paths)
    entries, rows = [], []
    for row, path in enumerate(paths):
        thumb = f"{len(entries):06d}.jpg"
        if str(path) in failed or not _thumbnail(path, out / THUMBS / thumb):
            failed.setdefault(str(path), "no thumbnail")
            continue
        entries.append({"path": str(path.relative_to(folder)), "thumb": thumb})
        rows.append(row)
    vocabulary = list(labels) if labels else default_labels(paths, folder)
    _save_array(out / "embeddings.npy", embeddings[rows].astype(np.float32))
    _save_array(out / "labels.npy", model.encode_text(vocabulary) if vocabulary else
                np.zeros((0, model.embed_dim), np.float32))
    (out / "labels.json").write_text(json.dumps(vocabulary))
    meta = {"format": INDEX_FORMAT, "root": str(folder), "dim": model.embed_dim, "count": len(entries),
            "model": model.net.config.__dict__, "images": entries,
            "skipped": {str(Path(k).relative_to(folder)) if k.startswith(str(folder)) else k: v
                        for k, v in failed.items()}}
    (out / "index.json").write_text(json.dumps(meta))
    return meta


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    tmp.replace(path)
