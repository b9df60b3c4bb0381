"""Hugging Face `datasets` on local disk: a folder written by `Dataset.save_to_disk`, or parquet files.

`hf:PATH[?image=COLUMN&caption=COLUMN&split=NAME]`; a bare `*.parquet` path or a `save_to_disk` folder
is recognised by its shape.  The image column may be an `Image` feature (bytes and/or path), a path
string or raw bytes; the caption column a string or a list of strings.  Images are decoded only when
embedded (the column is read undecoded), so listing a million rows costs no decoding.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl

from PIL import Image

from locktune.data.decode import decode_image
from locktune.data.images import ImageSet, load_image_file
from locktune.data.pairs import PATH_SOURCES, PairSet, take_evenly
from locktune.data.record_checks import SkipCounter, check_captions, print_report
from locktune.errors import LocktuneError

IMAGE_COLUMNS = ("image", "img", "jpg", "png", "image_path", "file_name", "path")
CAPTION_COLUMNS = ("caption", "captions", "text", "sentences", "title")


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _open(path: Path, split: str | None):
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: never reach for the hub
    from locktune.extras import require_extra

    require_extra("hf-datasets", f"pair source 'hf:{path}'")
    import datasets
    if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet")) and not is_saved_dataset(path)):
        files = [str(path)] if path.is_file() else sorted(str(p) for p in path.glob("*.parquet"))
        return datasets.load_dataset("parquet", data_files=files, split=split or "train")
    if not path.exists():
        raise LocktuneError(f"hf:{path} does not exist; give a folder from Dataset.save_to_disk or .parquet files")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        name = split or ("train" if "train" in loaded else None)
        if name not in loaded:
            raise LocktuneError(f"hf:{path} holds splits {', '.join(loaded)}; choose one with ?split=NAME")
        loaded = loaded[name]
    return loaded


def _column(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, where: str) -> str:
    if wanted:
        if wanted not in columns:
            raise LocktuneError(f"{where}: no {what} column '{wanted}'; columns: {', '.join(columns)}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise LocktuneError(f"{where}: no {what} column among {', '.join(columns)}; name it with ?{what}=COLUMN")


class HFImages(ImageSet):
    """Rows of a dataset's image column, read undecoded and opened only when loaded."""

    def __init__(self, dataset, column: str, rows: list[int], base: Path, name: str):
        self.dataset, self.column, self.rows, self.base = dataset, column, rows, base
        self.keys = [f"{name}#{row}" for row in rows]

    def load(self, index: int) -> Image.Image:
        value = self.dataset[self.rows[index]][self.column]
        if isinstance(value, dict):  # the Image feature, undecoded: {"bytes": ..., "path": ...}
            if value.get("bytes"):
                return decode_image(value["bytes"])
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return decode_image(value)
        if isinstance(value, str) and value:
            return load_image_file(self.base / value)
        raise ValueError(f"row {self.rows[index]} has no image in column '{self.column}'")

    def fingerprint(self) -> str:
        return f"{getattr(self.dataset, '_fingerprint', 'hf')}-{super().fingerprint()}"


def load_hf(spec: str, max_pairs: int = 0) -> PairSet:
    location, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"image", "caption", "split"}
    if unknown:
        raise LocktuneError(f"hf:{location}: unknown option(s) {', '.join(sorted(unknown))}; "
                            "valid: image=COLUMN, caption=COLUMN, split=NAME")
    path = Path(location)
    where = f"hf:{location}"
    dataset = _open(path, options.get("split"))
    columns = list(dataset.column_names)
    image_col = _column(columns, options.get("image"), IMAGE_COLUMNS, "image", where)
    caption_col = _column(columns, options.get("caption"), CAPTION_COLUMNS, "caption", where)
    feature = dataset.features.get(image_col)
    if type(feature).__name__ == "Image":
        from datasets import Image as ImageFeature

        dataset = dataset.cast_column(image_col, ImageFeature(decode=False))
    counter = SkipCounter()
    rows, captions = [], []
    for row, raw in enumerate(dataset[caption_col]):
        if raw is None:
            counter.skip("missing caption", where=f"{where}#{row}")
            continue
        kept, reason = check_captions(raw if isinstance(raw, list) else [raw], counter, f"{where}#{row}")
        if not kept:
            counter.skip(reason, where=f"{where}#{row}")
            continue
        rows.append(row)
        captions.append(kept)
    print_report(counter, where, len(rows))
    counter.check_enough(where, len(rows), f"check the caption column ('{caption_col}')")
    keep = take_evenly(len(rows), max_pairs)
    base = path if path.is_dir() else path.parent
    images = HFImages(dataset, image_col, [rows[i] for i in keep], base, where)
    return PairSet(where, images, [captions[i] for i in keep], dict(counter))


PATH_SOURCES.register("hf")(load_hf)
