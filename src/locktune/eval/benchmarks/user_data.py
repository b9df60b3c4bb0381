"""A user's own labelled images, for zero-shot classification and few-shot probes.

- `folder:ROOT`: one sub-folder per class (images may sit deeper).  An optional `ROOT/classes.txt` gives
  the class list and order, one class a line: `folder` or `folder<TAB>name the prompts use`.
- `table:FILE`: a CSV (header with `path` and `label` columns) or JSONL (`{"path": ..., "label": ...}`)
  file; relative paths are relative to the file.  Labels are class names, or indices into the class list.
  The class list is `classes.txt` beside the file (one name a line) if there is one, else the sorted labels.
Every problem is one line naming the class, file or row at fault.  A folder benchmark reads only what is
inside ROOT: a class (a classes.txt line like `../../x`, or a linked folder) that leads out of it is an
error, and an image link that leads out of it is skipped and counted.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from locktune.data.containment import inside
from locktune.data.images import FileImages, list_image_files
from locktune.errors import LocktuneError
from locktune.eval.benchmarks.base import LOCAL_BENCHMARKS, ClassificationSet, balanced_subset
from locktune.eval.templates import GENERAL

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".svg"}


def read_class_file(path: Path) -> list[tuple[str, str]]:
    """(key, display name) per non-empty line: `key` or `key<TAB>display name`."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, _, display = line.partition("\t")
            rows.append((key.strip(), display.strip() or key.strip()))
    return rows


def image_files(folder: Path, root: Path | None = None) -> list[Path]:
    """The image files under `folder`; with `root`, links that lead out of `root` are left out and counted
    (a benchmark folder is scored on its own images, not on whatever a link reaches)."""
    files = list_image_files(folder, IMAGE_SUFFIXES)
    if root is None:
        return files
    resolved = root.resolve()
    kept = [f for f in files if inside(f, resolved)]
    if len(kept) < len(files):
        first = next(f for f in files if not inside(f, resolved))
        print(f"locktune: {folder}: {len(files) - len(kept)} links leading outside '{root}' were skipped "
              f"(first: {first.relative_to(folder)})", file=sys.stderr)
    return kept


def labelled_set(name: str, paths: list[Path], labels: list[int], class_names: list[str], max_images: int,
                 templates: list[str] | None = None, imagenet_indices=None) -> ClassificationSet:
    """A ClassificationSet after the checks every local loader shares (classes with no images, empty sets)."""
    if not class_names:
        raise LocktuneError(f"benchmark '{name}': the class list is empty")
    counts = [0] * len(class_names)
    for label in labels:
        counts[label] += 1
    empty = next((class_names[c] for c, n in enumerate(counts) if n == 0), None)
    if empty is not None:
        raise LocktuneError(f"benchmark '{name}': class '{empty}' has no images")
    keep = balanced_subset(labels, max_images)
    return ClassificationSet(name, FileImages([paths[i] for i in keep]), [labels[i] for i in keep], class_names,
                             templates or GENERAL, imagenet_indices)


def readable_name(folder_name: str) -> str:
    """`golden_retriever` / `golden-retriever` -> `golden retriever`: what a prompt should say."""
    return " ".join(folder_name.replace("_", " ").replace("-", " ").split())


@LOCAL_BENCHMARKS.register("folder")
def image_folder(root: Path, max_images: int = 0, name: str | None = None,
                 templates: list[str] | None = None) -> ClassificationSet:
    name = name or f"folder:{root}"
    if not root.is_dir():
        raise LocktuneError(f"benchmark '{name}': folder '{root}' does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_file = root / "classes.txt"
    if class_file.is_file():
        classes = read_class_file(class_file)
        listed = {key for key, _ in classes}
        extra = next((f for f in folders if f not in listed), None)
        if extra is not None:
            raise LocktuneError(f"benchmark '{name}': folder '{extra}' is not in the class list ({class_file})")
    else:
        classes = [(f, readable_name(f)) for f in folders]
    if not classes:
        raise LocktuneError(f"benchmark '{name}': the class list is empty ('{root}' has no class sub-folders)")
    paths: list[Path] = []
    labels: list[int] = []
    resolved = root.resolve()
    for index, (key, display) in enumerate(classes):
        if not inside(root / key, resolved) or (root / key).resolve() == resolved:
            raise LocktuneError(f"benchmark '{name}': class '{key}' leads outside '{root}' (to "
                                f"'{(root / key).resolve()}'); a class is a folder inside the benchmark folder")
        found = image_files(root / key, root) if (root / key).is_dir() else []
        if not found:
            raise LocktuneError(f"benchmark '{name}': class '{display}' has no images (looked in '{root / key}')")
        paths += found
        labels += [index] * len(found)
    return labelled_set(name, paths, labels, [display for _, display in classes], max_images, templates)


def _table_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) from a CSV with a header or a JSONL file."""
    rows = []
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                    rows.append((number, str(record["path"]), str(record["label"])))
                except (ValueError, KeyError, TypeError) as error:
                    raise LocktuneError(f"{path}: line {number} is not a JSON object with 'path' and 'label' "
                                        f"({type(error).__name__}: {error})")
        return rows
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise LocktuneError(f"{path}: the CSV header must name 'path' and 'label' columns "
                                f"(found: {', '.join(reader.fieldnames or [])})")
        for number, record in enumerate(reader, start=2):
            rows.append((number, record["path"], record["label"]))
    return rows


@LOCAL_BENCHMARKS.register("table")
def labelled_table(path: Path, max_images: int = 0, name: str | None = None, class_names: list[str] | None = None,
                   templates: list[str] | None = None) -> ClassificationSet:
    name = name or f"table:{path}"
    if not path.is_file():
        raise LocktuneError(f"benchmark '{name}': file '{path}' does not exist")
    rows = _table_rows(path)
    if not rows:
        raise LocktuneError(f"benchmark '{name}': '{path}' lists no images")
    class_file = path.parent / "classes.txt"
    where = "the labels"
    if class_names is None and class_file.is_file():
        class_names, where = [display for _, display in read_class_file(class_file)], str(class_file)
    elif class_names is None:
        class_names = sorted({label for _, _, label in rows})
    if not class_names:
        raise LocktuneError(f"benchmark '{name}': the class list is empty ({where})")
    index = {c: i for i, c in enumerate(class_names)}
    paths, labels = [], []
    for number, image, label in rows:
        image_path = (path.parent / image) if not Path(image).is_absolute() else Path(image)
        if not image_path.is_file():
            raise LocktuneError(f"benchmark '{name}': image '{image}' (line {number} of {path.name}) does not exist")
        if label in index:
            labels.append(index[label])
        elif label.strip().isdigit() and int(label) < len(class_names):
            labels.append(int(label))
        else:
            raise LocktuneError(f"benchmark '{name}': label '{label}' (line {number} of {path.name}) is not in "
                                f"the class list ({where})")
        paths.append(image_path)
    return labelled_set(name, paths, labels, list(class_names), max_images, templates)
