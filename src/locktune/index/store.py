"""A searchable image index on disk, and search over it.

Folder layout (format 1, the brute-force backend; format 2, the faiss backend, is in `index/sharded.py`):

    index.json        format, model identity, image paths, thumbnail names, what was skipped
    embeddings.npy    float32 [N, dim], L2-normalised image embeddings, row i = images[i]
    labels.json       caption/label vocabulary for image -> text (file and folder names, or your own)
    labels.npy        float32 [L, dim], their text embeddings
    thumbs/           one small JPEG per image, named 000000.jpg ...

Search is one matrix-vector product and an argpartition: at 100,000 x 256 that is ~25M multiply-adds,
a few milliseconds, so no approximate index is needed at this scale.  Past a few hundred thousand images
build with `--backend faiss` (format 2): the vectors stay on disk, memory-mapped, and faiss searches them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from locktune.errors import LocktuneError

INDEX_FORMAT = 1
THUMBS = "thumbs"


def top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `matrix` most similar to `query` (dot product), best first -> (indices, scores)."""
    # torch's matrix-vector product, not numpy's: numpy's BLAS threads spin after each call and, beside
    # torch's own threads encoding the query, made text -> search ~10x slower on a 2-core machine.
    scores = torch.mv(torch.from_numpy(matrix), torch.from_numpy(np.ascontiguousarray(query, np.float32))).numpy()
    return best_of(scores, k)


def top_k_many(matrix: np.ndarray, queries: np.ndarray, ks: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """`top_k` for several queries [q, dim] at once: one matrix product reads the index once for all of them."""
    scores = torch.mm(torch.from_numpy(matrix), torch.from_numpy(np.ascontiguousarray(queries, np.float32)).T).numpy()
    return [best_of(np.ascontiguousarray(scores[:, j]), k) for j, k in enumerate(ks)]


def best_of(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest scores, best first -> (indices, scores)."""
    k = max(0, min(k, scores.shape[0]))
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    # argpartition is O(N); only the k winners get sorted.
    best = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    best = best[np.argsort(-scores[best], kind="stable")]
    return best, scores[best]


@dataclass
class ImageIndex:
    folder: Path
    meta: dict
    embeddings: np.ndarray  # [N, dim]: float32 in memory (format 1), or memory-mapped float16 shards (format 2)
    labels: list[str]
    label_embeddings: np.ndarray  # [L, dim] float32
    searcher: object | None = None  # format 2: a FaissSearcher; None: brute force over `embeddings`
    paths: object | None = None  # format 2: row -> image path (`sharded.ImagePaths`); format 1 reads meta["images"]

    @classmethod
    def load(cls, folder: str | Path, embed_dim: int | None = None) -> "ImageIndex":
        """Open an index folder; every vectors file is checked against index.json (and `embed_dim`, the
        serving model's, when given), so a truncated or foreign file is one LocktuneError here, not a 500 on
        every search later."""
        folder = Path(folder).resolve()
        meta_path = folder / "index.json"
        if not meta_path.is_file():
            raise LocktuneError(f"'{folder}' is not a locktune image index (no index.json); "
                                "make one with `locktune index FOLDER --model M --out INDEX`")
        from locktune.index.sharded import SHARDED_FORMAT, open_sharded

        meta = json.loads(meta_path.read_text())
        if meta.get("format") not in (INDEX_FORMAT, SHARDED_FORMAT):
            raise LocktuneError(f"'{folder}' has index format {meta.get('format')!r}; this locktune reads "
                                f"{INDEX_FORMAT} and {SHARDED_FORMAT}")
        dim = embed_dim or meta.get("dim")
        searcher = paths = None
        if meta["format"] == SHARDED_FORMAT:
            embeddings, searcher, paths = open_sharded(folder, meta, dim, rebuild_hint(folder, meta))
        else:
            # Read into memory (100,000 x 256 float32 is 100 MB): every search touches every row.
            embeddings = _vectors(folder, "embeddings.npy", len(meta["images"]), dim, meta)
        dim = embeddings.shape[1]
        labels_path, label_emb_path = folder / "labels.json", folder / "labels.npy"
        labels = json.loads(labels_path.read_text()) if labels_path.is_file() else []
        label_emb = (_vectors(folder, "labels.npy", len(labels), dim, meta) if label_emb_path.is_file()
                     else np.zeros((0, dim), np.float32))
        return cls(folder, meta, embeddings, labels, label_emb, searcher, paths)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def vectors_file(self) -> str:
        """Where the image vectors live, for messages."""
        return "embeddings.npy" if self.searcher is None else "vectors/*.npy"

    def vector(self, row: int) -> np.ndarray:
        """Image `row`'s embedding, float32 [dim]."""
        return np.asarray(self.embeddings[row], np.float32)

    def search(self, query: np.ndarray, k: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """Images nearest to an L2-normalised query embedding -> (row indices, cosine scores)."""
        if self.searcher is None:
            return top_k(self.embeddings, np.asarray(query, np.float32).reshape(-1), k)
        return self.search_many(np.asarray(query, np.float32).reshape(1, -1), [k])[0]

    def search_many(self, queries: np.ndarray, ks: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`search` for several queries [q, dim] at once (brute force reads the vectors once for all of them)."""
        if self.searcher is None:
            return top_k_many(self.embeddings, queries, ks)
        return self.searcher.search_many(queries, ks)

    def nearest_labels(self, query: np.ndarray, k: int = 10) -> tuple[list[str], np.ndarray]:
        rows, scores = top_k(self.label_embeddings, np.asarray(query, np.float32).reshape(-1), k)
        return [self.labels[i] for i in rows], scores

    def image(self, row: int) -> dict:
        """What the API shows about one image: its id, source path (relative) and thumbnail URL."""
        path, thumb = self._entry(row)
        return {"id": row, "path": path, "thumb": f"/thumbs/{thumb}"}

    def _entry(self, row: int) -> tuple[str, str]:
        """(image path as stored, thumbnail name); format 2 names thumbnails by row."""
        if self.paths is not None:
            return self.paths[row], f"{row:06d}.jpg"
        entry = self.meta["images"][row]
        return entry["path"], entry["thumb"]

    def thumb_file(self, name: str) -> Path | None:
        """The thumbnail file `name` if, once resolved, it lies inside the thumbnail folder; else None.

        Resolving first and comparing folders defeats '..', absolute paths, encoded slashes and symlinks
        that point outside.
        """
        root = (self.folder / THUMBS).resolve()
        try:
            path = (root / name).resolve()
        except (OSError, ValueError):
            return None
        if path.parent != root or not path.is_file():
            return None
        return path

    def original_file(self, row: int) -> Path:
        return Path(self.meta["root"]) / self._entry(row)[0]  # an absolute path (an added folder) stays as is


def rebuild_hint(folder: Path, meta: dict) -> str:
    """What to run when an index file is broken."""
    backend = " --backend faiss" if meta.get("format") == 2 else ""
    return f"rebuild the index with `locktune index {meta.get('root', 'FOLDER')} --model MODEL --out {folder}{backend}`"


def _vectors(folder: Path, name: str, rows: int, dim: int | None, meta: dict) -> np.ndarray:
    """`folder/name` as float32 [rows, dim] (dim None: any width), or one LocktuneError naming the file, the
    shape expected and found, and how to rebuild it."""
    path = folder / name
    want = f"({rows}, {dim if dim else 'embed_dim'})"
    fix = rebuild_hint(folder, meta)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LocktuneError(f"index '{folder}' has no {name} (expected float32 vectors of shape {want}); "
                            f"{fix}") from None
    except (ValueError, OSError, EOFError) as error:  # truncated: numpy cannot fill the shape its header names
        raise LocktuneError(f"{path} is unreadable or truncated (expected float32 vectors of shape {want}; numpy: "
                            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}); {fix}") from None
    if array.ndim != 2 or array.shape[0] != rows or (dim and array.shape[1] != dim):
        raise LocktuneError(f"{path} holds vectors of shape {tuple(array.shape)}, expected {want} (one row per "
                            f"entry of index.json, as wide as the model's embedding); {fix}")
    return np.ascontiguousarray(array, dtype=np.float32)
