"""The sharded index folder (format 2, `locktune index --backend faiss`), written part by part and opened
without reading the vectors into memory.

    index.json              format 2, model identity, the faiss choice (type, parameters, recall), the parts
    vectors/00000.npy       float16 [n, dim] L2-normalised image vectors of part 0 (memory-mapped when served)
    vectors/00000.paths     part 0's image paths, one JSON string a line (relative to the index's root, or absolute)
    faiss.index             the faiss index over every part's rows (row numbers are ids)
    labels.json, labels.npy the label vocabulary and its text embeddings, as in format 1
    thumbs/                 one JPEG per image, named by row: 000000.jpg ...

`locktune index MORE --add-to INDEX` writes part N+1, adds its rows to faiss.index and rewrites index.json last,
so an interrupted add leaves the index as it was.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np

from locktune.errors import LocktuneError
from locktune.index.vector_shards import VectorShards, shard_name, write_shard

SHARDED_FORMAT = 2


def write_part(folder: Path, number: int, vectors: np.ndarray, paths: list[str]) -> dict:
    """Part `number`'s vectors and paths -> its index.json entry."""
    name = shard_name(number)
    write_shard(folder, name, vectors)
    paths_name = name.removesuffix(".npy") + ".paths"
    (folder / paths_name).write_text("".join(json.dumps(p) + "\n" for p in paths))
    return {"file": name, "paths": paths_name, "rows": len(paths)}


class ImagePaths:
    """Row -> image path, read from the parts' path files on demand (a 10M index does not hold 10M strings)."""

    def __init__(self, folder: Path, parts: list[dict]):
        self.files = [folder / p["paths"] for p in parts]
        self.starts = np.cumsum([0] + [p["rows"] for p in parts])
        self._lines: dict[int, tuple[mmap.mmap | bytes, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, row: int) -> str:
        part = int(np.searchsorted(self.starts, row, side="right")) - 1
        data, ends = self._part(part)
        local = row - int(self.starts[part])
        begin = int(ends[local - 1]) + 1 if local else 0
        return json.loads(bytes(data[begin:int(ends[local])]))

    def _part(self, part: int):
        if part not in self._lines:
            path = self.files[part]
            with open(path, "rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b""
            ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n")) if len(data) else np.zeros(0, np.int64)
            want = int(self.starts[part + 1] - self.starts[part])
            if len(ends) != want:
                raise LocktuneError(f"{path} lists {len(ends)} images, index.json {want}; rebuild the index")
            self._lines[part] = (data, ends)
        return self._lines[part]


def open_sharded(folder: Path, meta: dict, dim: int, fix: str):
    """(vectors, searcher, image paths) of a format-2 folder; every file is checked against index.json here."""
    from locktune.index.choose import IndexChoice
    from locktune.index.faiss_backend import FaissSearcher, read_index

    shards = VectorShards.open(folder, meta["parts"], dim, fix)
    choice = IndexChoice.from_json(meta["index"])
    searcher = FaissSearcher(read_index(folder, len(shards), fix), choice, shards)
    missing = [p["paths"] for p in meta["parts"] if not (folder / p["paths"]).is_file()]
    if missing:
        raise LocktuneError(f"index '{folder}' has no {missing[0]} (its image paths); {fix}")
    return shards, searcher, ImagePaths(folder, meta["parts"])
