"""An index's image vectors as float16 .npy shards, memory-mapped: a 10M x 256 index is 5 GB on disk and only
the rows a search touches are read.  Each `locktune index --add-to` writes one more shard; nothing already
written is rewritten.

The shards read together as one [N, dim] matrix: `shards[row]` (one float32 vector), `shards.rows(ids)`
(several), `shards.chunks()` (the whole matrix, a block at a time, for exact search and for (re)building).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from locktune.errors import LocktuneError

SHARD_DIR = "vectors"
CHUNK_ROWS = 65536


def shard_name(number: int) -> str:
    return f"{SHARD_DIR}/{number:05d}.npy"


def write_shard(folder: Path, name: str, vectors: np.ndarray) -> None:
    """`vectors` [n, dim] as float16 into `folder/name`, atomically (a crash leaves no half-written shard)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float16))
    tmp.replace(path)


def open_shard(path: Path, rows: int, dim: int, fix: str) -> np.ndarray:
    """`path` memory-mapped as float16 [rows, dim], or one LocktuneError naming the file and how to fix it."""
    want = f"float16 vectors of shape ({rows}, {dim})"
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise LocktuneError(f"vector shard {path} is missing (expected {want}); {fix}") from None
    except (ValueError, OSError, EOFError) as error:  # a truncated file cannot be mapped to its header's shape
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LocktuneError(f"vector shard {path} is unreadable or truncated (expected {want}; numpy: {first}); "
                            f"{fix}") from None
    if array.dtype != np.float16 or array.shape != (rows, dim):
        raise LocktuneError(f"vector shard {path} holds {array.dtype} vectors of shape {tuple(array.shape)}, expected "
                            f"{want} (as index.json records); {fix}")
    return array


class VectorShards:
    """Several memory-mapped float16 shards read as one [N, dim] matrix of float32 rows."""

    def __init__(self, arrays: list[np.ndarray], names: list[str]):
        self.arrays, self.names = arrays, names
        self.starts = np.cumsum([0] + [len(a) for a in arrays])
        self.dim = int(arrays[0].shape[1]) if arrays else 0

    @classmethod
    def open(cls, folder: Path, shards: list[dict], dim: int, fix: str) -> "VectorShards":
        """The shards listed in index.json (`[{"file": ..., "rows": ...}]`), each checked and memory-mapped."""
        return cls([open_shard(folder / s["file"], s["rows"], dim, fix) for s in shards], [s["file"] for s in shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.dim

    def __getitem__(self, row: int) -> np.ndarray:
        if not 0 <= row < len(self):
            raise IndexError(row)
        shard = int(np.searchsorted(self.starts, row, side="right")) - 1
        return np.asarray(self.arrays[shard][row - self.starts[shard]], np.float32)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """float32 [len(ids), dim]: the rows `ids` (any order), gathered across shards."""
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        which = np.searchsorted(self.starts, ids, side="right") - 1
        for shard in np.unique(which):
            mask = which == shard
            local = ids[mask] - self.starts[shard]
            order = np.argsort(local)  # ascending reads are kinder to the page cache
            out[np.flatnonzero(mask)[order]] = self.arrays[shard][local[order]]
        return out

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) over the whole matrix, in order."""
        for start, array in zip(self.starts, self.arrays):
            for i in range(0, len(array), rows):
                yield int(start + i), np.asarray(array[i:i + rows], np.float32)


def exact_top_k(shards: VectorShards, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of each query [q, dim] over every row -> (ids [q, k], scores [q, k]), best first,
    one block of rows at a time (never the whole matrix in float32)."""
    queries = np.ascontiguousarray(queries, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for start, block in shards.chunks():
        scores = queries @ block.T
        ids = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
        scores, ids = np.concatenate([best_scores, scores], 1), np.concatenate([best_ids, ids], 1)
        if scores.shape[1] > k:  # O(rows) partition; only the k winners are kept
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
        best_scores, best_ids = scores, ids
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, 1), np.take_along_axis(best_scores, order, 1)
