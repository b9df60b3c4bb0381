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


def _stored_path(path: str | Path, root: Path) -> str:
    """How index.json records an image: relative to the index's root, or absolute (an added folder elsewhere)."""
    path = Path(path)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def embed_folder(model, folder: Path, out: Path, root: Path, first_row: int = 0):
    """Embed every image under `folder` and write its thumbnails into `out` (named from row `first_row` on) ->
    (vectors float32 [m, dim], entries [{"path", "thumb"}], skipped {path: why}, every image path found).
    Paths are recorded relative to `root` (the index's first folder)."""
    if not folder.is_dir():
        raise LocktuneError(f"'{folder}' is not a folder of images")
    paths = list_images(folder)
    if not paths:
        raise LocktuneError(f"no images under '{folder}' (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    (out / THUMBS).mkdir(parents=True, exist_ok=True)
    embeddings, failed = _image_embeddings(model.net, paths)
    entries, rows = [], []
    for row, path in enumerate(paths):
        thumb = f"{first_row + len(entries):06d}.jpg"
        if str(path) in failed or not _thumbnail(path, out / THUMBS / thumb):
            failed.setdefault(str(path), "no thumbnail")
            continue
        entries.append({"path": _stored_path(path, root), "thumb": thumb})
        rows.append(row)
    if not entries:
        from locktune.cache.image_side import skipped_summary

        raise LocktuneError(f"none of the {len(paths)} images under '{folder}' could be indexed "
                            f"({skipped_summary(failed)}); no index was written")
    skipped = {_stored_path(k, root) if k.startswith(str(folder)) else k: v for k, v in failed.items()}
    return embeddings[rows].astype(np.float32), entries, skipped, paths


def write_labels(model, out: Path, vocabulary: list[str]) -> None:
    """labels.json and their text embeddings labels.npy (image -> label search)."""
    _save_array(out / "labels.npy", model.encode_text(vocabulary).cpu().numpy() if vocabulary else
                np.zeros((0, model.embed_dim), np.float32))
    (out / "labels.json").write_text(json.dumps(vocabulary))


def build_index(model, folder: str | Path, out: str | Path, labels: Sequence[str] | None = None,
                backend: str = "brute", **faiss_options) -> dict:
    """Index every image under `folder` into `out`; returns the index's metadata.

    `model` is a `locktune.api.LitModel`.  `labels` is the vocabulary for image -> text (default: the
    collection's file and folder names).  `backend` "brute" (format 1: float32 vectors searched exactly) or
    "faiss" (format 2: `faiss_build.build_faiss_index`, with `max_index_memory` and `flat_max`).
    """
    folder, out = Path(folder).resolve(), Path(out)
    if backend == "faiss":
        from locktune.index.faiss_build import build_faiss_index

        return build_faiss_index(model, folder, out, labels, **faiss_options)
    if backend != "brute":
        raise LocktuneError(f"--backend {backend!r} is not an index backend; use brute or faiss")
    embeddings, entries, skipped, paths = embed_folder(model, folder, out, folder)
    vocabulary = list(labels) if labels else default_labels(paths, folder)
    _save_array(out / "embeddings.npy", embeddings)
    write_labels(model, out, vocabulary)
    meta = {"format": INDEX_FORMAT, "root": str(folder), "dim": model.embed_dim, "count": len(entries),
            "model": model.net.config.__dict__, "model_fingerprint": model.fingerprint,
            "labels_given": bool(labels), "images": entries, "skipped": skipped}
    (out / "index.json").write_text(json.dumps(meta))
    return meta


def add_to_index(model, folder: str | Path, index_folder: str | Path, labels: Sequence[str] | None = None) -> dict:
    """Add the images under `folder` to an existing index without embedding its images again; returns the new
    metadata, with "added_now" = how many images were added.  The model must be the one that built the index.

    Format 1 rewrites embeddings.npy with the new rows after the old; format 2 writes one more vector shard and
    adds its rows to the faiss index (`faiss_build.add_to_faiss_index`)."""
    from locktune.index.store import ImageIndex

    folder, index_folder = Path(folder).resolve(), Path(index_folder)
    index = ImageIndex.load(index_folder)
    built_by = index.meta.get("model_fingerprint")
    if built_by != model.fingerprint:
        raise LocktuneError(f"--add-to '{index_folder}': the index was built with another model (weights {built_by}, "
                            f"this model's {model.fingerprint}); add with the model that built it, or build a new index")
    if index.meta["format"] != INDEX_FORMAT:
        from locktune.index.faiss_build import add_to_faiss_index

        return add_to_faiss_index(model, folder, index, labels)
    meta, root = index.meta, Path(index.meta["root"])
    embeddings, entries, skipped, paths = embed_folder(model, folder, index_folder, root, first_row=len(index))
    _save_array(index_folder / "embeddings.npy", np.concatenate([index.embeddings, embeddings]))
    write_labels(model, index_folder, merged_labels(index, labels, paths, folder))
    meta.update(count=len(index) + len(entries), images=meta["images"] + entries, skipped={**meta["skipped"], **skipped},
                labels_given=meta.get("labels_given") or bool(labels), added=meta.get("added", []) + [str(folder)])
    (index_folder / "index.json").write_text(json.dumps(meta))
    return {**meta, "added_now": len(entries)}


def merged_labels(index, labels: Sequence[str] | None, paths: list[Path], folder: Path) -> list[str]:
    """The vocabulary after an add: labels given now, else the index's own (given ones kept as they were; file-name
    ones grown with the new folder's names)."""
    if labels:
        return list(labels)
    if index.meta.get("labels_given"):
        return list(index.labels)
    return sorted(set(index.labels) | set(default_labels(paths, folder)))


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
    meta = index.meta
    if meta["format"] == INDEX_FORMAT:
        build_index(model, meta["root"], folder, labels)
    else:
        budget = meta["index"]["budget_bytes"]
        build_index(model, meta["root"], folder, labels, backend="faiss", max_index_memory=budget,
                    flat_max=meta.get("flat_max"))
    for added in meta.get("added", []):
        add_to_index(model, added, folder, labels)
    return ImageIndex.load(folder)


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    tmp.replace(path)
