"""An image folder with captions: a captions file inside it (captions.tsv/.csv/.jsonl, paths relative to the
folder), or else one KEY.txt beside each image (one caption per line).

Records stay inside the folder: a symbolic link, or a captions-file path with `..`, that leads out of it
is counted as "outside the folder" and skipped (a folder of links into a photo library is still read with
`folder:PATH?follow_symlinks=1`).  A KEY.txt over MAX_CAPTION_FILE_BYTES is not read.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from locktune.data.containment import inside
from locktune.data.images import FileImages
from locktune.data.pairs import PATH_SOURCES, PairSet, take_evenly
from locktune.data.sources.manifest import read_manifest
from locktune.data.record_checks import MAX_CAPTION_FILE_BYTES, SkipCounter, check_captions, print_report
from locktune.errors import LocktuneError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".svg")
CAPTION_FILES = ("captions.tsv", "captions.csv", "captions.jsonl")
# Pictures this source does not decode: counted as "unsupported image format" (even without a caption
# beside them) rather than passed over in silence; convert them to PNG or JPEG.
UNSUPPORTED_IMAGE_SUFFIXES = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".ico", ".psd",
                              ".dng", ".cr2", ".nef", ".arw", ".raw")


def _images(root: Path, counter: SkipCounter, follow_symlinks: bool = False) -> list[Path]:
    """The image files under `root`, in order; every entry that looks like a record but cannot be one is
    counted: a directory or other non-file named like an image, a dangling link, a link leading out of the
    folder (unless `follow_symlinks`), a picture in a format this source does not take, a caption with no
    image beside it.  Other files (KEY.json sidecars, notes) are not records and are passed over."""
    resolved_root = root.resolve()
    entries = sorted(root.rglob("*"))
    image_stems = {e.with_suffix("") for e in entries if e.suffix.lower() in IMAGE_SUFFIXES}
    pictured = image_stems | {e.with_suffix("") for e in entries if e.suffix.lower() in UNSUPPORTED_IMAGE_SUFFIXES}
    images = []
    for entry in entries:
        suffix, stem = entry.suffix.lower(), entry.with_suffix("")
        if suffix in IMAGE_SUFFIXES:
            if entry.is_symlink() and entry.exists() and not follow_symlinks and not inside(entry, resolved_root):
                counter.skip("outside the folder", where=f"{entry} (a link; folder:PATH?follow_symlinks=1 reads it)")
            elif entry.is_file():
                images.append(entry)
            elif entry.is_symlink() and not entry.exists():
                counter.skip("dangling link", where=str(entry))
            else:  # a directory named like an image, a fifo ...
                counter.skip("not a file", where=str(entry))
        elif suffix in UNSUPPORTED_IMAGE_SUFFIXES and stem not in image_stems:
            counter.skip("unsupported image format", where=f"{entry} (takes {', '.join(IMAGE_SUFFIXES)})")
        elif suffix == ".txt" and entry.is_file() and stem not in pictured:
            counter.skip("missing image", where=str(entry))
    return images


def _read_caption_file(text: Path) -> bytes | None:
    """The file's bytes, or None when it is over MAX_CAPTION_FILE_BYTES (only that much is read)."""
    with open(text, "rb") as f:
        data = f.read(MAX_CAPTION_FILE_BYTES + 1)
    return None if len(data) > MAX_CAPTION_FILE_BYTES else data


def load_folder(location: str, max_pairs: int = 0) -> PairSet:
    """`PATH`, optionally followed by `?follow_symlinks=1` (read links that lead out of the folder)."""
    location, _, query = location.partition("?")
    options = dict(parse_qsl(query))
    if set(options) - {"follow_symlinks"} or options.get("follow_symlinks", "0") not in ("0", "1"):
        raise LocktuneError(f"image folder '{location}': unknown option(s) '{query}'; valid: follow_symlinks=0|1")
    follow = options.get("follow_symlinks") == "1"
    root = Path(location)
    if not root.is_dir():
        raise LocktuneError(f"image folder '{root}' does not exist")
    for name in CAPTION_FILES:
        if (root / name).is_file():
            return read_manifest(root / name, root, max_pairs=max_pairs, name=f"folder:{root}",
                                 within=None if follow else root.resolve())
    counter = SkipCounter()
    paths, captions = [], []
    resolved_root = root.resolve()
    for image in _images(root, counter, follow):
        text = image.with_suffix(".txt")
        if not text.is_file():
            counter.skip("missing caption", where=str(image))
            continue
        if not follow and not inside(text, resolved_root):
            counter.skip("outside the folder", where=f"{text} (a link; folder:PATH?follow_symlinks=1 reads it)")
            continue
        try:
            data = _read_caption_file(text)
        except OSError as error:  # no permission, or gone since the listing
            counter.skip("unreadable caption file", where=f"{text} ({error.strerror})")
            continue
        if data is None:
            counter.skip("caption file too large", where=f"{text} (over {MAX_CAPTION_FILE_BYTES:,} bytes)")
            continue
        lines = [line for line in data.split(b"\n") if line.strip()]
        kept, reason = check_captions(lines or [b""], counter, str(text))
        if not kept:
            counter.skip(reason, where=str(text))
            continue
        paths.append(image)
        captions.append(kept)
    label = f"folder:{root}"
    print_report(counter, label, len(paths))
    counter.check_enough(label, len(paths), f"put a {' / '.join(CAPTION_FILES)} in the folder, or KEY.txt beside "
                         "each image")
    keep = take_evenly(len(paths), max_pairs)
    return PairSet(label, FileImages([paths[i] for i in keep]), [captions[i] for i in keep], dict(counter))


PATH_SOURCES.register("folder")(load_folder)
