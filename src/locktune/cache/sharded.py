"""A sharded embedding cache for datasets too large for one array: fixed-size float16 shards + a manifest.

Layout of a cache folder:
    shards/00000.npy   [rows, dim] float16 (NaN rows: images that could not be read)
    shards/00000.text.npy, 00000.offsets.npy  each record's key and captions as UTF-8 ("key\0cap\ncap")
                       and where each starts: read per row, so captions cost no memory either
    shards/00000.textvec.npy, 00000.textrows.npy  built with a locked text tower (`text_tower`): every caption's
                       text-tower output [captions, dim_text] in record order, and where each record's start
                       (int64 [rows + 1]); the manifest's `text` names the tower (`cache/text_side.text_identity`)
    shards/00000.json  that shard's checksums and failures; written after the arrays, so a shard with
                       a matching sidecar is finished and a rerun skips it (resumable)
    manifest.json      written last: tower fingerprint, preprocessing, source, counts, per-shard checksums

Training reads it with `ShardedCache.open(folder)`; rows are fetched with positioned reads (or a memory
map), so the process's memory does not grow with the dataset.  Captions are stored beside the vectors so
training needs neither the images nor the source.

    cache = ShardedCache.open("cache/cc12m")
    len(cache), cache.dim            # pairs, embedding width
    cache.rows([5, 17, 3])           # torch.float32 [3, dim]
    cache.rows([5, 17], views=[2, 0])  # with `views=k` at build time: k embeddings per image, pick one
    cache.valid                      # torch.bool [N]; False where the image was skipped
    cache.keys[i], cache.captions[i] # the record's key and its captions
    cache.caption_counts()           # int32 [N]: captions per row, without decoding any
    cache.text_rows([5, 17], [0, 3]) # with text vectors: caption (draw % its captions) of each row, [2, dim_text]
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from locktune.cache.embedding_cache import _sha256
from locktune.data.decode import failure_reason
from locktune.data.pairs import PairSet
from locktune.data.record_checks import SkipCounter
from locktune.errors import LocktuneError
from locktune.progress import progress
from locktune.runtime import distributed
from locktune.runtime.pause_point import pause_point

SHARDED_FORMAT = 2  # 2: sidecars list failed rows


class ShardWriter:
    """Writes shards of one planned cache; `plan` (tower, preprocessing, source, sizes) names what the
    folder holds, so a rerun on other data or another tower is refused instead of mixing shards."""

    def __init__(self, folder: str | Path, plan: dict):
        self.folder = Path(folder)
        self.plan = {"format": SHARDED_FORMAT, **plan}
        self.plan_id = hashlib.sha256(json.dumps(self.plan, sort_keys=True).encode()).hexdigest()[:24]
        (self.folder / "shards").mkdir(parents=True, exist_ok=True)
        plan_path = self.folder / "plan.json"
        if plan_path.is_file():
            if json.loads(plan_path.read_text()).get("plan_id") != self.plan_id:
                raise LocktuneError(f"cache folder '{self.folder}' holds a cache of other images, tower or settings; "
                                    "give another folder or delete this one")
        elif distributed.is_main():
            _write_json(plan_path, {"plan_id": self.plan_id, **self.plan})

    def shard_count(self) -> int:
        return -(-self.plan["count"] // self.plan["shard_size"])

    def shard_range(self, shard: int) -> range:
        size = self.plan["shard_size"]
        return range(shard * size, min(self.plan["count"], (shard + 1) * size))

    def sidecar(self, shard: int) -> dict | None:
        """The finished shard's sidecar, or None when the shard is missing, partial or damaged."""
        array, side = self.folder / "shards" / f"{shard:05d}.npy", self.folder / "shards" / f"{shard:05d}.json"
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("plan_id") != self.plan_id or not array.is_file() or _sha256(array) != meta.get("sha256"):
            return None
        text = _text_paths(array)
        if not all(p.is_file() for p in text) or _sha256(text[0]) != meta.get("text_sha256"):
            return None
        if "text" in self.plan:
            vectors = _text_vector_paths(array)
            if not all(p.is_file() for p in vectors) or _sha256(vectors[0]) != meta.get("textvec_sha256"):
                return None
        return meta

    def write(self, shard: int, vectors: np.ndarray, keys: list[str], captions: list[list[str]],
              failed: dict[str, str], text_vectors: np.ndarray | None = None) -> None:
        array = self.folder / "shards" / f"{shard:05d}.npy"
        tmp = array.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, vectors.astype(self.plan["dtype"]))
        tmp.replace(array)
        records = [f"{key}\0" + "\n".join(caps) for key, caps in zip(keys, captions)]  # keys are file names: not always UTF-8
        encoded = [r.encode("utf-8", "surrogateescape") for r in records]
        offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        text_path, offsets_path = _text_paths(array)
        for path, data in ((offsets_path, offsets), (text_path, np.frombuffer(b"".join(encoded), np.uint8))):
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, data)
            tmp.replace(path)
        extra = {}
        if text_vectors is not None:  # every caption's text vector, and where each record's start
            vector_path, rows_path = _text_vector_paths(array)
            starts = np.cumsum([0] + [len(caps) for caps in captions], dtype=np.int64)
            for path, data in ((rows_path, starts), (vector_path, text_vectors.astype(self.plan["dtype"]))):
                tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
                np.save(tmp, data)
                tmp.replace(path)
            extra["textvec_sha256"] = _sha256(vector_path)
        _write_json(array.with_suffix(".json"), {"plan_id": self.plan_id, "rows": len(keys), "sha256": _sha256(array),
                                                 "text_sha256": _sha256(text_path), "failed": failed,
                                                 "failed_rows": [i for i, key in enumerate(keys) if key in failed],
                                                 **extra})

    def summarize(self, extra: dict, world: int = 1) -> dict:
        """The manifest, once every shard is finished; an error naming the first unfinished one otherwise.
        `world`: how many ranks computed the shards (after all of them said they were done)."""
        shards, reasons, failed_total = [], Counter(), 0
        for shard in range(self.shard_count()):
            meta = self.sidecar(shard)
            if meta is None and world > 1:
                raise LocktuneError(f"cache shard {shard:05d} in '{self.folder}' is missing or damaged on rank 0 "
                                    f"after all {world} ranks finished: the cache folder must be on a filesystem "
                                    "every node shares (NFS, Lustre, ...), not a node-local disk; give such a "
                                    "folder and rerun `locktune embed --sharded`")
            if meta is None:
                raise LocktuneError(f"cache shard {shard:05d} in '{self.folder}' is missing or damaged; rerun "
                                    "`locktune embed` to compute it")
            shards.append({"file": f"shards/{shard:05d}.npy", "rows": meta["rows"], "sha256": meta["sha256"]})
            reasons.update(failure_reason(e) for e in meta["failed"].values())
            failed_total += len(meta["failed"])
        manifest = {**self.plan, "plan_id": self.plan_id, "shards": shards, "valid": self.plan["count"] - failed_total,
                    "image_failures": dict(reasons), **extra}
        return manifest

    def finish(self, extra: dict) -> dict:
        """Summarize and write manifest.json, which marks the cache finished."""
        manifest = self.summarize(extra)
        _write_json(self.folder / "manifest.json", manifest)
        return manifest


class _Views(Dataset):
    """View 0 is the image as preprocessed; views 1.. are seeded random crops of it (data/augment.py)."""

    def __init__(self, images, preprocess, views: int):
        self.images, self.preprocess, self.views = images, preprocess, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from locktune.data.augment import random_crop, view_seed

        try:
            image = self.images.load(index)
            key = self.images.keys[index]
            views = [image] + [random_crop(image, view_seed(key, v)) for v in range(1, self.views)]
            return index, torch.stack([self.preprocess(v) for v in views]), ""
        except Exception as error:  # a broken image is counted, never fatal
            size = self.preprocess.image_size
            return index, torch.zeros(self.views, 3, size, size), f"{type(error).__name__}: {error}"


def _text_paths(array: Path) -> tuple[Path, Path]:
    return array.with_suffix(".text.npy"), array.with_suffix(".offsets.npy")


def _text_vector_paths(array: Path) -> tuple[Path, Path]:
    return array.with_suffix(".textvec.npy"), array.with_suffix(".textrows.npy")


class _ShardText(Sequence):
    """Per-row key or captions, decoded from the shards' text arrays on access (nothing held in memory)."""

    def __init__(self, cache: "ShardedCache", part: int):
        self.cache, self.part = cache, part

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard, row = divmod(index, self.cache.shard_size)
        key, _, captions = self.cache._record_text(shard, row).partition("\0")
        return key if self.part == 0 else captions.split("\n")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    # A key from a non-UTF-8 file name holds lone surrogates: written as \udcXX escapes, which JSON reads
    # back as the same string; any other text is written as UTF-8, as before.
    tmp.write_bytes(json.dumps(data, ensure_ascii=False).encode("utf-8", "backslashreplace"))
    tmp.replace(path)


def build_sharded_cache(tower, preprocess, pairs: PairSet, folder: str | Path, shard_size: int = 8192,
                        dtype: str = "float16", batch_size: int = 64, workers: int = 1,
                        views: int = 1, text_tower=None) -> "ShardedCache":
    """Embed every image of `pairs` into `folder`, skipping shards a previous (killed) run finished.

    Under torchrun (one node or several) the shards still to do are dealt round-robin over all ranks: each rank
    reads and embeds only its shards' images and writes those shards itself; only the list of unfinished shard
    numbers passes between ranks, never vectors.  Rank 0 writes the manifest once every rank is done, so the
    folder must be one that every node sees (a shared filesystem).  Images that cannot be read become NaN
    rows, counted by reason with the source's own skips; when most records failed this is an error instead of
    a cache to train on.

    With `text_tower` (a locked text tower, `?L`), each shard also holds every caption's text-tower output
    (`cache/text_side.py` embeds them as training would), and the manifest names that tower: training then runs
    no text tower either.
    """
    from locktune.cache.text_side import text_identity

    start = time.time()
    text = {"text": text_identity(text_tower)} if text_tower is not None else {}
    writer = ShardWriter(folder, {**tower.cache_identity(), "preprocess": preprocess.describe(), "source": pairs.name,
                                  "images": pairs.images.fingerprint(), "count": len(pairs),
                                  "shard_size": shard_size, "dtype": dtype, "views": views, **text})
    world, rank = distributed.world_size(), distributed.rank()
    rerun = "rerun the same `locktune embed --sharded` command on every node: finished shards are kept"
    with distributed.naming_failures("the sharded precompute", then=rerun):
        distributed.prepare_to_wait()
        # Each rank checks a share of the sidecars (a checksum reads the whole shard), then the unfinished ones
        # are dealt over all ranks: after a node died, its leftovers are spread, not left to its replacement.
        unfinished = distributed.union_over_ranks([s for s in range(writer.shard_count())[rank::world]
                                                   if writer.sidecar(s) is None])
        todo = unfinished[rank::world]
        _embed_shards(tower, preprocess, pairs, writer, todo, batch_size, workers, views, text_tower)
        distributed.wait_for_peers()  # ranks finish their shards at different times
        return _finish(writer, pairs, start)


def _embed_shards(tower, preprocess, pairs: PairSet, writer: ShardWriter, todo: list[int], batch_size: int,
                  workers: int, views: int, text_tower=None) -> None:
    """Compute and write the shards `todo`: this rank decodes those shards' images and no others."""
    shard_size = writer.plan["shard_size"]
    # Batches never straddle shards, so each shard is complete the moment its last batch arrives, while the
    # workers already decode the next shard's images.
    batches = [list(rows[i:i + batch_size]) for s in todo for rows in [writer.shard_range(s)]
               for i in range(0, len(rows), batch_size)]
    loader = DataLoader(_Views(pairs.images, preprocess, views), batch_sampler=batches, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    was_training = tower.training
    tower.eval()
    device = next(tower.parameters()).device
    current, buffer, failed = None, None, {}
    with torch.no_grad(), progress(total=sum(len(b) for b in batches), desc=f"embedding {pairs.name}", unit="img",
                                   enabled=distributed.is_main()) as bar:
        for indices, pixels, errors in loader:
            shard = int(indices[0]) // shard_size
            rows = writer.shard_range(shard)
            flat = pixels.flatten(0, 1).to(device).contiguous(memory_format=torch.channels_last)
            out = tower(flat).float().cpu().numpy().reshape(len(indices), views, -1)
            if current != shard:
                current, buffer, failed = shard, np.zeros((len(rows), views, out.shape[2]), np.float32), {}
            for j, error in enumerate(errors):
                if error:
                    failed[pairs.images.keys[int(indices[j])]] = error
                    out[j] = np.nan
            buffer[np.asarray(indices) - rows.start] = out
            bar.update(len(indices))
            if int(indices[-1]) == rows.stop - 1:
                captions = [pairs.captions[i] for i in rows]
                text_vectors = None
                if text_tower is not None:
                    from locktune.cache.text_side import embed_captions

                    text_vectors = embed_captions(text_tower, [c for caps in captions for c in caps]).numpy()
                # One view is stored as [rows, dim], so such a cache reads like any embedding matrix.
                writer.write(shard, buffer[:, 0] if views == 1 else buffer, [pairs.images.keys[i] for i in rows],
                             captions, failed, text_vectors)
                pause_point("sharded-shard-written", shard=str(shard))
    tower.train(was_training)


def _finish(writer: ShardWriter, pairs: PairSet, start: float) -> "ShardedCache":
    """Rank 0 checks every shard and writes the manifest (or refuses a cache of mostly failures); all ranks
    then open the finished cache."""
    refused = writer.folder / "refused.json"
    if distributed.is_main():
        # Only rank 0 decides, but every rank must leave the same way (an error raised on one rank alone
        # would leave the others waiting at the barrier), so the verdict goes through a file.
        manifest = writer.summarize({"source_skipped": pairs.skipped, "seconds": round(time.time() - start, 1)},
                                    distributed.world_size())
        counts = SkipCounter({**pairs.skipped, **manifest["image_failures"]})
        print(f"locktune: {counts.report(pairs.name, manifest['valid'])}", file=sys.stderr)
        try:
            counts.check_enough(pairs.name, manifest["valid"], "check the source's format and images")
            refused.unlink(missing_ok=True)
            _write_json(writer.folder / "manifest.json", manifest)
        except LocktuneError as error:  # no manifest: training cannot pick up a cache of mostly nothing
            _write_json(refused, {"error": str(error)})
    distributed.wait_for_peers()  # rank 0 checksums every shard meanwhile: minutes for a large cache
    if refused.is_file():
        raise LocktuneError(json.loads(refused.read_text())["error"])
    return ShardedCache.open(writer.folder)


class ShardedCache:
    """Read side of a sharded cache; see the module docstring for the interface."""

    def __init__(self, folder: Path, manifest: dict, access: str):
        self.folder, self.manifest, self.access = folder, manifest, access
        self.shard_size, self.count = manifest["shard_size"], manifest["count"]
        self._files: dict[str, int] = {}  # path -> descriptor, for positioned reads
        self.keys: Sequence[str] = _ShardText(self, 0)
        self.captions: Sequence[list[str]] = _ShardText(self, 1)
        # One byte per pair: small beside the 2 * dim bytes of its vector, and training filters on it.
        self.valid = torch.ones(self.count, dtype=torch.bool)
        self._arrays: list[np.ndarray] = []
        self._texts: list[tuple[np.ndarray, np.ndarray]] = []
        # The text tower the shards hold caption vectors of (`cache/text_side.text_identity`), or None.
        self.text_identity: dict | None = manifest.get("text")
        self._text_vectors: list[tuple[np.ndarray, np.ndarray]] = []
        for number, shard in enumerate(manifest["shards"]):
            path = folder / shard["file"]
            failed_rows = json.loads(path.with_suffix(".json").read_text())["failed_rows"]
            # mmap_mode='r' maps a file without reading it; only the rows a batch asks for are ever read.
            self._arrays.append(np.load(path, mmap_mode="r"))
            self._texts.append(tuple(np.load(p, mmap_mode="r") for p in _text_paths(path)))
            if self.text_identity is not None:
                self._text_vectors.append(tuple(np.load(p, mmap_mode="r") for p in _text_vector_paths(path)))
            self.valid[[number * self.shard_size + row for row in failed_rows]] = False
        self.views = int(manifest.get("views", 1))
        self.dim = int(self._arrays[0].shape[-1]) if self._arrays else 0

    @classmethod
    def open(cls, folder: str | Path, verify: bool = False, access: str = "pread") -> "ShardedCache":
        """The finished cache in `folder`; `verify` checks every shard's sha256 (reads all of it).

        access="pread" reads rows with positioned reads, so the process's resident memory stays flat;
        "mmap" indexes the memory maps (faster for contiguous rows, but touched pages count as resident).
        """
        folder = Path(folder)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError) as error:
            raise LocktuneError(f"'{folder}' is not a finished sharded cache ({error}); run `locktune embed` "
                                "to build or finish it")
        if manifest.get("format") != SHARDED_FORMAT:
            raise LocktuneError(f"sharded cache '{folder}' has format {manifest.get('format')}, this locktune reads "
                                f"{SHARDED_FORMAT}; delete it and rerun `locktune embed --sharded` to rebuild it")
        for shard in manifest["shards"]:
            path = folder / shard["file"]
            if not path.is_file() or (verify and _sha256(path) != shard["sha256"]):
                raise LocktuneError(f"cache shard '{path}' is missing or does not match its checksum; delete it "
                                    "and rerun `locktune embed` to compute it again")
        return cls(folder, manifest, access)

    def __len__(self) -> int:
        return self.count

    def rows(self, indices, views=None) -> torch.Tensor:
        """Rows `indices` (any order, repeats allowed) as a float32 tensor [len(indices), dim].

        With augmented views, `views` picks one per row (an int or one per index; default view 0, the
        unaugmented image).
        """
        indices = np.asarray(indices, dtype=np.int64)
        picks = np.broadcast_to(np.asarray(0 if views is None else views, dtype=np.int64), indices.shape)
        if picks.size and (picks.min() < 0 or picks.max() >= self.views):
            raise ValueError(f"view numbers must be 0..{self.views - 1}")
        out = np.empty((len(indices), self.dim), np.float32)
        shards = indices // self.shard_size
        for shard in np.unique(shards):
            where = np.nonzero(shards == shard)[0]
            local = indices[where] - shard * self.shard_size
            out[where] = self._read(int(shard), local, picks[where])
        return torch.from_numpy(out)

    def _read(self, shard: int, local: np.ndarray, views: np.ndarray) -> np.ndarray:
        array = self._arrays[shard]
        if self.access == "mmap":
            return array[local] if self.views == 1 else array[local, views]
        # The .npy data starts at the map's offset; rows are read one by one, each a single syscall.
        fd, width = self._fd(array.filename), self.dim * array.itemsize
        data = b"".join(os.pread(fd, width, array.offset + (int(row) * self.views + int(view)) * width)
                        for row, view in zip(local, views))
        return np.frombuffer(data, dtype=array.dtype).reshape(len(local), self.dim)

    def text_rows(self, indices, draws) -> torch.Tensor:
        """Each row's caption number `draw % (its captions)` as its text-tower output, float32
        [len(indices), dim_text] (a cache built with a locked text tower; positioned reads as for `rows`)."""
        if self.text_identity is None:
            raise LocktuneError(f"sharded cache '{self.folder}' holds no text vectors; rebuild it with `locktune "
                                "embed --sharded` and a locked text tower (setting ?L)")
        out = []
        for index, draw in zip(np.asarray(indices, np.int64), np.asarray(draws, np.int64)):
            shard, row = divmod(int(index), self.shard_size)
            vectors, starts = self._text_vectors[shard]
            start, stop = (starts[row], starts[row + 1]) if self.access == "mmap" else np.frombuffer(
                os.pread(self._fd(starts.filename), 16, starts.offset + 8 * row), np.int64)
            out.append(self._vector(vectors, int(start + draw % (stop - start))))
        return torch.from_numpy(np.stack(out).astype(np.float32)) if out else torch.zeros(0, self.text_dim)

    @property
    def text_dim(self) -> int:
        return int(self._text_vectors[0][0].shape[1]) if self._text_vectors else 0

    def _vector(self, array: np.ndarray, row: int) -> np.ndarray:
        if self.access == "mmap":
            return np.asarray(array[row])
        width = array.shape[1] * array.itemsize
        return np.frombuffer(os.pread(self._fd(array.filename), width, array.offset + row * width), array.dtype)

    def _record_text(self, shard: int, row: int) -> str:
        text, offsets = self._texts[shard]
        if self.access == "mmap":
            return bytes(text[offsets[row]:offsets[row + 1]]).decode("utf-8", "surrogateescape")
        start, stop = np.frombuffer(os.pread(self._fd(offsets.filename), 16, offsets.offset + 8 * row), np.int64)
        return os.pread(self._fd(text.filename), int(stop - start), text.offset + int(start)).decode("utf-8", "surrogateescape")

    def caption_counts(self) -> np.ndarray:
        """How many captions each row holds (int32 [N]), counted shard by shard from the text arrays with
        whole-shard reads: no per-row decoding, and nothing kept but the result."""
        counts = np.empty(self.count, np.int32)
        for shard, (text, offsets) in enumerate(self._texts):
            text, offsets = self._whole(text), self._whole(offsets)
            ends = offsets[1:]
            # A record is "key\0cap\ncap...": its captions follow its first NUL, one per newline plus one.
            nuls = np.flatnonzero(text == 0)
            first_nul = nuls[np.searchsorted(nuls, offsets[:-1])]
            newlines = np.zeros(len(text) + 1, np.int32)  # newlines[i]: newlines in text[:i]
            np.cumsum(text == 10, dtype=np.int32, out=newlines[1:])
            start = shard * self.shard_size
            counts[start:start + len(ends)] = newlines[ends] - newlines[first_nul + 1] + 1
        return counts

    def _whole(self, array: np.ndarray) -> np.ndarray:
        """All of a mapped array, read into private memory (so, unlike mapped pages, it is freed after use)."""
        if self.access == "mmap":
            return np.asarray(array)
        return np.fromfile(array.filename, array.dtype, array.size, offset=array.offset).reshape(array.shape)

    def _fd(self, path: str) -> int:
        if path not in self._files:
            self._files[path] = os.open(path, os.O_RDONLY)
        return self._files[path]

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
