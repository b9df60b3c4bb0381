"""An image folder with captions: a captions file inside it (captions.tsv/.csv/.jsonl, paths relative to the
folder), or else one KEY.txt beside each image (one caption per line)."""

from __future__ import annotations

from pathlib import Path

from locktune.data.images import FileImages
from locktune.data.pairs import PATH_SOURCES, PairSet, take_evenly
from locktune.data.sources.manifest import read_manifest
from locktune.data.validate import SkipCounter, check_captions, print_report
from locktune.errors import LocktuneError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".svg")
CAPTION_FILES = ("captions.tsv", "captions.csv", "captions.jsonl")


def load_folder(location: str, max_pairs: int = 0) -> PairSet:
    root = Path(location)
    if not root.is_dir():
        raise LocktuneError(f"image folder '{root}' does not exist")
    for name in CAPTION_FILES:
        if (root / name).is_file():
            return read_manifest(root / name, root, max_pairs=max_pairs, name=f"folder:{root}")
    counter = SkipCounter()
    paths, captions = [], []
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        text = image.with_suffix(".txt")
        if not text.is_file():
            counter.skip("missing caption")
            continue
        lines = [line for line in text.read_bytes().split(b"\n") if line.strip()]
        kept, reason = check_captions(lines or [b""], counter)
        if not kept:
            counter.skip(reason)
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
