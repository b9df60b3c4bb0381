"""`locktune index FOLDER --backend faiss` and `--add-to`: the sharded index folder (format 2, `sharded.py`).

A build embeds the folder, writes part 0 (float16 vectors + paths), lets `choose.py` pick the faiss index
from the count and the memory budget, trains and fills it, tunes nprobe / efSearch to recall@10 >= 0.97 on a
sample, and writes index.json last.  An add writes one more part and adds its rows to the trained index; only
when the larger count calls for another index type (say flat -> IVF-PQ) is the faiss index rebuilt, from the
stored vectors (no image is embedded again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from locktune.index.choose import (DEFAULT_FLAT_MAX, DEFAULT_MAX_INDEX_MEMORY, IndexChoice, choose_index, memory_bytes,
                                   parse_memory)
from locktune.index.sharded import SHARDED_FORMAT, write_part
from locktune.index.store import rebuild_hint
from locktune.index.vector_shards import VectorShards


def build_faiss_index(model, folder: Path, out: Path, labels: Sequence[str] | None = None,
                      max_index_memory: str | int = DEFAULT_MAX_INDEX_MEMORY, flat_max: int | None = None) -> dict:
    """Index every image under `folder` into `out` with the faiss backend; returns index.json's content."""
    from locktune.extras import require_extra
    from locktune.index.build import default_labels, embed_folder, write_labels

    require_extra("faiss", "locktune index --backend faiss")
    budget = max_index_memory if isinstance(max_index_memory, int) else parse_memory(max_index_memory)
    flat_max = DEFAULT_FLAT_MAX if flat_max is None else int(flat_max)
    out.mkdir(parents=True, exist_ok=True)
    vectors, entries, skipped, paths = embed_folder(model, folder, out, folder)
    meta = {"format": SHARDED_FORMAT, "backend": "faiss", "root": str(folder), "dim": model.embed_dim, "count": 0,
            "model": model.net.config.__dict__, "model_fingerprint": model.fingerprint, "labels_given": bool(labels),
            "flat_max": flat_max, "parts": [], "skipped": skipped}
    meta["parts"].append(write_part(out, 0, vectors, [e["path"] for e in entries]))
    write_labels(model, out, list(labels) if labels else default_labels(paths, folder))
    return _index_parts(out, meta, budget, grow_from=None)


def add_to_faiss_index(model, folder: Path, index, labels: Sequence[str] | None = None) -> dict:
    """Add the images under `folder` to the format-2 `index` (an `ImageIndex`); returns the new index.json content
    with "added_now"."""
    from locktune.index.build import embed_folder, merged_labels, write_labels

    meta, out = dict(index.meta), index.folder
    vectors, entries, skipped, paths = embed_folder(model, folder, out, Path(meta["root"]), first_row=len(index))
    meta["parts"] = meta["parts"] + [write_part(out, len(meta["parts"]), vectors, [e["path"] for e in entries])]
    write_labels(model, out, merged_labels(index, labels, paths, folder))
    meta.update(skipped={**meta["skipped"], **skipped}, labels_given=meta.get("labels_given") or bool(labels),
                added=meta.get("added", []) + [str(folder)])
    return {**_index_parts(out, meta, meta["index"]["budget_bytes"], grow_from=index), "added_now": len(entries)}


def _index_parts(out: Path, meta: dict, budget: int, grow_from) -> dict:
    """(Re)index every part's vectors in faiss, tune, write faiss.index and then index.json; `grow_from`: the
    index before an add, whose trained faiss index takes the new rows while the count still calls for its type and
    it still fits the budget (IVF-PQ keeps its lists and codebooks: no retraining)."""
    from locktune.index.faiss_backend import add_rows, new_index, read_index, tune, write_index

    fix = rebuild_hint(out, meta)
    shards = VectorShards.open(out, meta["parts"], meta["dim"], fix)
    choice = choose_index(len(shards), shards.dim, budget, meta["flat_max"])
    old = IndexChoice.from_json(meta["index"]) if grow_from is not None else None
    if old is not None and old.kind == choice.kind and memory_bytes(old.kind, old.params, len(shards), shards.dim) <= budget:
        faiss_index = read_index(out, len(grow_from), fix, mmap=False)
        add_rows(faiss_index, shards, len(grow_from))
        # the trained structure and tuned search parameters carry over; tune() raises nprobe / efSearch if needed
        choice = IndexChoice(old.kind, old.params, memory_bytes(old.kind, old.params, len(shards), shards.dim), budget)
    else:
        faiss_index = new_index(choice, shards)
    tune(faiss_index, choice, shards)
    write_index(faiss_index, out)
    meta.update(count=len(shards), index=choice.to_json())
    (out / "index.json").write_text(json.dumps(meta))
    return meta
