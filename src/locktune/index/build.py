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

from locktune.errors import LocktuneError
from locktune.index.store import INDEX_FORMAT, THUMBS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".svg", ".tif", ".tiff"}
THUMB_SIZE = 192


def list_images(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted so the index order is stable."""
    from locktune.data.images import list_image_files

    return list_image_files(folder, IMAGE_SUFFIXES)


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
    """(embeddings [N, dim], image key -> why it is skipped): unreadable images, and images whose features or
    embedding are zero or non-finite (a broken normalisation), which are never counted as indexed."""
    from locktune.cache.image_side import image_set_features, unusable_rows
    from locktune.data.images import FileImages

    images = FileImages(paths)
    side = image_set_features(net, images, desc="indexing images")  # cache for a locked tower
    with torch.inference_mode():
        embeddings = net.embed_image_features(side.zeroed()).float().cpu()  # unusable rows dropped below
    failed = dict(side.failed)
    for row, why in unusable_rows(embeddings).items():
        failed.setdefault(images.keys[row], why)
    return embeddings.numpy(), failed


def _thumbnail(path: Path, out: Path) -> bool:
    from locktune.data.images import load_image_file

    try:
        image = load_image_file(path)
        from locktune.data.decode import on_background

        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        on_background(image).save(out, "JPEG", quality=85)  # transparency on white, as the model sees it
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
    if not entries:
        from locktune.cache.image_side import skipped_summary

        raise LocktuneError(f"none of the {len(paths)} images under '{folder}' could be indexed "
                            f"({skipped_summary(failed)}); no index was written")
    vocabulary = list(labels) if labels else default_labels(paths, folder)
    _save_array(out / "embeddings.npy", embeddings[rows].astype(np.float32))
    _save_array(out / "labels.npy", model.encode_text(vocabulary).cpu().numpy() if vocabulary else
                np.zeros((0, model.embed_dim), np.float32))
    (out / "labels.json").write_text(json.dumps(vocabulary))
    meta = {"format": INDEX_FORMAT, "root": str(folder), "dim": model.embed_dim, "count": len(entries),
            "model": model.net.config.__dict__, "model_fingerprint": model.fingerprint,
            "labels_given": bool(labels), "images": entries,
            "skipped": {str(Path(k).relative_to(folder)) if k.startswith(str(folder)) else k: v
                        for k, v in failed.items()}}
    (out / "index.json").write_text(json.dumps(meta))
    return meta


def index_for_model(model, folder: str | Path, reembed: bool = False):
    """Open an index for serving with `model`: one built by another model (or by a locktune too old to record
    which) is refused, or, with `reembed`, its images are embedded again with this model in place."""
    from locktune.index.store import ImageIndex

    index = ImageIndex.load(folder)
    built_by = index.meta.get("model_fingerprint")
    if built_by == model.fingerprint:
        return index
    if not reembed:
        why = (f"was built with another model (weights {built_by}, this model's {model.fingerprint})" if built_by
               else "does not record which model built it (an older locktune)")
        raise LocktuneError(f"index '{folder}' {why}, so its search results would be wrong; rebuild it with "
                            f"`locktune index {index.meta['root']} --model MODEL --out {folder}`, or pass --reembed "
                            "to embed its images again with this model")
    labels = index.labels if index.meta.get("labels_given") else None
    build_index(model, index.meta["root"], folder, labels)
    return ImageIndex.load(folder)


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    tmp.replace(path)
