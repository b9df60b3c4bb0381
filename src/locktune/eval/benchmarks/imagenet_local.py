"""Loaders for a user's local copy of ImageNet-1k validation and its out-of-distribution variants.

Layouts (as the datasets are distributed):
- `imagenet:DIR`, `imagenet_sketch:DIR`: 1,000 sub-folders named by WordNet id (n01440764 ...); sorted,
  they are the class indices 0..999.
- `imagenet_v2:DIR`: sub-folders named 0..999 (the ImageNetV2 release).
- `imagenet_r:DIR`, `imagenet_a:DIR`: 200 WordNet-id sub-folders; scored over those 200 classes only, as
  their authors do.  Mapping a WordNet id to its index needs the 1,000 ids in order: the file
  `assets/imagenet_wnids.txt` if locktune carries it, else a file named by $LOCKTUNE_IMAGENET_WNIDS
  (one id a line, or ImageNet's LOC_synset_mapping.txt).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from locktune.errors import LocktuneError
from locktune.eval.assets import ASSETS, imagenet_class_names, templates
from locktune.eval.benchmarks.base import LOCAL_BENCHMARKS, ClassificationSet
from locktune.eval.benchmarks.user_data import image_files, labelled_set

WNID = re.compile(r"^n\d{8}$")


def _class_folders(root: Path, name: str, pattern: re.Pattern, expected: int | None) -> list[str]:
    if not root.is_dir():
        raise LocktuneError(f"benchmark '{name}': folder '{root}' does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and pattern.match(p.name))
    if not folders or (expected is not None and len(folders) != expected):
        raise LocktuneError(f"benchmark '{name}': expected {expected or 'some'} class folders matching "
                            f"{pattern.pattern} in '{root}', found {len(folders)}")
    return folders


def _load(root: Path, name: str, folders: list[str], indices: list[int], max_images: int) -> ClassificationSet:
    paths, labels = [], []
    names = imagenet_class_names()
    for label, folder in enumerate(folders):
        found = image_files(root / folder)
        paths += found
        labels += [label] * len(found)
    return labelled_set(name, paths, labels, [names[i] for i in indices], max_images, templates("imagenet"),
                        [[i] for i in indices])


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k WordNet ids in class-index order."""
    carried = ASSETS / "imagenet_wnids.txt"
    path = carried if carried.is_file() else Path(os.environ.get("LOCKTUNE_IMAGENET_WNIDS", ""))
    if not path.is_file():
        raise LocktuneError("ImageNet-R/-A need the ImageNet-1k WordNet ids in index order: set "
                            "LOCKTUNE_IMAGENET_WNIDS to a file of them (ImageNet's LOC_synset_mapping.txt works)")
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(wnids) != 1000:
        raise LocktuneError(f"'{path}' lists {len(wnids)} WordNet ids; expected 1000")
    return wnids


def _sorted_wnid_set(kind: str):
    def load(root: Path, max_images: int = 0) -> ClassificationSet:
        name = f"{kind}:{root}"
        folders = _class_folders(root, name, WNID, 1000)
        return _load(root, name, folders, list(range(1000)), max_images)
    return load


def _subset_wnid_set(kind: str):
    def load(root: Path, max_images: int = 0) -> ClassificationSet:
        name = f"{kind}:{root}"
        folders = _class_folders(root, name, WNID, None)
        index = {w: i for i, w in enumerate(imagenet_wnids())}
        unknown = next((f for f in folders if f not in index), None)
        if unknown is not None:
            raise LocktuneError(f"benchmark '{name}': folder '{unknown}' is not an ImageNet-1k class")
        return _load(root, name, folders, [index[f] for f in folders], max_images)
    return load


@LOCAL_BENCHMARKS.register("imagenet_v2")
def imagenet_v2(root: Path, max_images: int = 0) -> ClassificationSet:
    name = f"imagenet_v2:{root}"
    folders = sorted(_class_folders(root, name, re.compile(r"^\d+$"), 1000), key=int)
    return _load(root, name, folders, [int(f) for f in folders], max_images)


LOCAL_BENCHMARKS.register("imagenet")(_sorted_wnid_set("imagenet"))
LOCAL_BENCHMARKS.register("imagenet_sketch")(_sorted_wnid_set("imagenet_sketch"))
LOCAL_BENCHMARKS.register("imagenet_r")(_subset_wnid_set("imagenet_r"))
LOCAL_BENCHMARKS.register("imagenet_a")(_subset_wnid_set("imagenet_a"))
