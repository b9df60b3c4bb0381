"""Loaders for a user's local copies of the seven VTAB-natural sets the paper evaluates zero-shot:
Caltech101, CIFAR-100, DTD, Flowers102, Oxford-IIIT Pets, SUN397, SVHN.  Each takes the folder the
dataset unpacks to, in the layout its authors distribute; prompts are CLIP's set for that dataset.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from locktune.data.images import ArrayImages
from locktune.errors import LocktuneError
from locktune.eval.assets import templates
from locktune.eval.benchmarks.base import LOCAL_BENCHMARKS, ClassificationSet, balanced_subset
from locktune.eval.benchmarks.user_data import (IMAGE_SUFFIXES, image_files, labelled_set, read_class_file,
                                                readable_name)


def _find(root: Path, name: str, *candidates: str) -> Path:
    """The first of root/candidate that exists (datasets unpack with or without a top folder)."""
    for candidate in candidates:
        if (root / candidate).exists():
            return root / candidate
    raise LocktuneError(f"benchmark '{name}': none of {', '.join(candidates)} found under '{root}'")


def _folder_classes(root: Path, name: str, max_images: int, template_set: str, skip=()) -> ClassificationSet:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in skip)
    paths, labels = [], []
    for label, folder in enumerate(folders):
        found = image_files(folder)
        paths += found
        labels += [label] * len(found)
    return labelled_set(name, paths, labels, [readable_name(f.name) for f in folders], max_images,
                        templates(template_set))


@LOCAL_BENCHMARKS.register("caltech101")
def caltech101(root: Path, max_images: int = 0) -> ClassificationSet:
    name = f"caltech101:{root}"
    # caltech-101/: the official caltech-101.zip; caltech101/: torchvision's download.
    folder = _find(root, name, "101_ObjectCategories", "caltech-101/101_ObjectCategories",
                   "caltech101/101_ObjectCategories", ".")
    return _folder_classes(folder, name, max_images, "caltech101", skip=("BACKGROUND_Google",))


@LOCAL_BENCHMARKS.register("dtd")
def dtd(root: Path, max_images: int = 0) -> ClassificationSet:
    name = f"dtd:{root}"
    return _folder_classes(_find(root, name, "images", "dtd/images"), name, max_images, "dtd")


@LOCAL_BENCHMARKS.register("sun397")
def sun397(root: Path, max_images: int = 0) -> ClassificationSet:
    """SUN397/<letter>/<class>[/<subclass>]/*.jpg: a class is a folder that holds images directly."""
    name = f"sun397:{root}"
    top = _find(root, name, "SUN397", ".")
    folders = sorted({p.parent for p in top.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES})
    paths, labels, names = [], [], []
    for label, folder in enumerate(folders):
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += found
        labels += [label] * len(found)
        names.append(readable_name(" ".join(folder.relative_to(top).parts[1:]) or folder.name))
    return labelled_set(name, paths, labels, names, max_images, templates("sun397"))


@LOCAL_BENCHMARKS.register("pets")
def pets(root: Path, max_images: int = 0) -> ClassificationSet:
    """Oxford-IIIT Pets: images/<Breed_Name>_<n>.jpg; the test list annotations/test.txt when present."""
    name = f"pets:{root}"
    images = _find(root, name, "images", "oxford-iiit-pet/images")
    test_list = images.parent / "annotations" / "test.txt"
    if test_list.is_file():
        stems = [line.split()[0] for line in test_list.read_text().splitlines() if line.strip()]
    else:
        stems = sorted(p.stem for p in images.glob("*.jpg"))
    breeds = sorted({s.rsplit("_", 1)[0] for s in stems})
    index = {b: i for i, b in enumerate(breeds)}
    paths = [images / f"{s}.jpg" for s in stems]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise LocktuneError(f"benchmark '{name}': image '{missing}' is listed but does not exist")
    return labelled_set(name, paths, [index[s.rsplit("_", 1)[0]] for s in stems],
                        [readable_name(b) for b in breeds], max_images, templates("pets"))


@LOCAL_BENCHMARKS.register("flowers102")
def flowers102(root: Path, max_images: int = 0) -> ClassificationSet:
    """jpg/image_NNNNN.jpg + imagelabels.mat (+ setid.mat's test ids); class names from a classes.txt
    (102 names, one a line, in label order) beside them, which the dataset itself does not ship."""
    from locktune.extras import require_extra

    require_extra("local-benchmarks", "reading .mat files")
    from scipy.io import loadmat

    name = f"flowers102:{root}"
    labels_mat = _find(root, name, "imagelabels.mat", "flowers-102/imagelabels.mat")
    base = labels_mat.parent
    class_file = base / "classes.txt"
    if not class_file.is_file():
        raise LocktuneError(f"benchmark '{name}': put the 102 class names, one a line in label order, in "
                            f"'{class_file}' (the dataset ships none)")
    class_names = [display for _, display in read_class_file(class_file)]
    all_labels = loadmat(labels_mat)["labels"].ravel().astype(int) - 1
    ids = (loadmat(base / "setid.mat")["tstid"].ravel().astype(int) if (base / "setid.mat").is_file()
           else np.arange(1, len(all_labels) + 1))
    paths = [base / "jpg" / f"image_{i:05d}.jpg" for i in ids]
    labels = [int(all_labels[i - 1]) for i in ids]
    bad = next((label for label in labels if not 0 <= label < len(class_names)), None)
    if bad is not None:
        raise LocktuneError(f"benchmark '{name}': label {bad + 1} in imagelabels.mat has no name in "
                            f"'{class_file}' ({len(class_names)} names)")
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise LocktuneError(f"benchmark '{name}': image '{missing}' is listed but does not exist")
    return labelled_set(name, paths, labels, class_names, max_images, templates("flowers102"))


@LOCAL_BENCHMARKS.register("cifar100")
def cifar100(root: Path, max_images: int = 0) -> ClassificationSet:
    """The python version: cifar-100-python/test and meta (pickles)."""
    name = f"cifar100:{root}"
    folder = _find(root, name, "cifar-100-python", ".")
    with open(folder / "test", "rb") as f:
        test = pickle.load(f, encoding="latin1")
    with open(folder / "meta", "rb") as f:
        class_names = [readable_name(n) for n in pickle.load(f, encoding="latin1")["fine_label_names"]]
    images = np.asarray(test["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = [int(label) for label in test["fine_labels"]]
    keep = balanced_subset(labels, max_images)
    return ClassificationSet(name, ArrayImages(images, "cifar100_test", keep), [labels[i] for i in keep],
                             class_names, templates("cifar100"))


@LOCAL_BENCHMARKS.register("svhn")
def svhn(root: Path, max_images: int = 0) -> ClassificationSet:
    """test_32x32.mat (the cropped-digits format); label 10 means the digit 0."""
    from locktune.extras import require_extra

    require_extra("local-benchmarks", "reading .mat files")
    from scipy.io import loadmat

    name = f"svhn:{root}"
    data = loadmat(_find(root, name, "test_32x32.mat", "svhn/test_32x32.mat"))
    images = np.ascontiguousarray(np.asarray(data["X"], dtype=np.uint8).transpose(3, 0, 1, 2))
    labels = [int(y) % 10 for y in np.asarray(data["y"]).ravel()]
    keep = balanced_subset(labels, max_images)
    return ClassificationSet(name, ArrayImages(images, "svhn_test", keep), [labels[i] for i in keep],
                             [str(d) for d in range(10)], templates("svhn"))
