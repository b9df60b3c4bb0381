"""Sharded-cache reader: batches/s and peak resident memory from a 1,000,000-pair cache vs a 10,000-pair one,
against the time the text tower takes for one training step on such a batch.

Synthetic float16 embeddings (width 1280, mobilenet_v2's) are written once per size with the real shard
writer; each size is then read in its own process, so each peak RSS (ru_maxrss) is that reader's alone.
A batch is `--batch` random rows plus their captions, which is what a training step takes from the cache.

    python benchmarks/cache_reader.py [--sizes 10000,1000000] [--batches 300] [--batch 64] [--text-tower minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

os.environ.setdefault("LOCKTUNE_QUIET", "1")

DIM = 1280


def write_synthetic(folder: Path, count: int, shard_size: int) -> None:
    from locktune.cache.sharded import ShardWriter

    if (folder / "manifest.json").is_file():
        return
    writer = ShardWriter(folder, {"tower": "synthetic", "weights": "random", "preprocess": {}, "source": "synthetic",
                                  "images": f"synthetic-{count}", "count": count, "shard_size": shard_size,
                                  "dtype": "float16"})
    rng = np.random.default_rng(0)
    for shard in range(writer.shard_count()):
        rows = writer.shard_range(shard)
        vectors = rng.standard_normal((len(rows), DIM), dtype=np.float32)
        writer.write(shard, vectors, [f"{i:09d}" for i in rows], [[f"a photo of thing number {i}"] for i in rows], {})
    writer.finish({})


def status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak) of this process.  Not ru_maxrss: Linux carries that across
    fork and exec, so a reader started after the parent wrote the big cache would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def read(folder: Path, batches: int, batch: int, access: str) -> dict:
    """Runs in a child process: open the cache, then time random batches (rows + captions)."""
    import torch  # noqa: F401  (imported before the baseline so it does not count as the reader's growth)

    from locktune.cache.sharded import ShardedCache

    base = status_mb("VmRSS")
    cache = ShardedCache.open(folder, access=access)
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for _ in range(batches):
        pick = rng.integers(0, len(cache), batch)
        rows = cache.rows(pick)
        captions = [cache.captions[int(i)] for i in pick]
    seconds = time.perf_counter() - start
    assert rows.shape == (batch, cache.dim) and len(captions) == batch
    return {"pairs": len(cache), "access": access, "batches_per_s": round(batches / seconds, 1),
            "peak_rss_mb": status_mb("VmHWM"), "rss_before_open_mb": base, "rss_after_reading_mb": status_mb("VmRSS")}


def text_step_seconds(batch: int, text_tower: str, steps: int = 5) -> float:
    """Seconds per LU training step (text tower forward + backward, loss, optimizer) at this batch."""
    import torch

    from locktune.config import ModelConfig
    from locktune.model import build_model
    from locktune.train.step import Batch, whole_step

    model = build_model(ModelConfig(setting="LU", image_size=64, image_tower="mobilenet_v2", text_tower=text_tower),
                        corpus=lambda: [f"a photo of thing number {i}" for i in range(batch)])
    model.train()
    tokens = model.tokenize([f"a photo of thing number {i}" for i in range(batch)])
    features = torch.randn(batch, DIM)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        b = Batch(tokens["ids"], tokens["mask"], features=features)
        optimizer.zero_grad(set_to_none=True)
        whole_step(model, b, nullcontext())
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=65536)
    parser.add_argument("--text-tower", default="minilm")
    parser.add_argument("--access", default="pread", choices=("pread", "mmap"))
    parser.add_argument("--folder", default=None, help="where the synthetic caches go (default: a temp folder)")
    parser.add_argument("--read", default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read(Path(args.read), args.batches, args.batch, args.access)))
        return
    root = Path(args.folder or tempfile.mkdtemp(prefix="locktune-cache-bench-"))
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        folder = root / f"synthetic-{size}"
        start = time.perf_counter()
        write_synthetic(folder, size, args.shard_size)
        written = time.perf_counter() - start
        child = subprocess.run([sys.executable, __file__, "--read", str(folder), "--batches", str(args.batches),
                                "--batch", str(args.batch), "--access", args.access],
                               capture_output=True, text=True, check=True)
        results.append({**json.loads(child.stdout.strip().splitlines()[-1]), "write_s": round(written, 1)})
    step = text_step_seconds(args.batch, args.text_tower)
    report = {"batch": args.batch, "dim": DIM, "dtype": "float16", "text_tower": args.text_tower,
              "text_step_s": round(step, 4), "text_steps_per_s": round(1 / step, 2), "readers": results,
              "reader_over_text_step": [round(r["batches_per_s"] * step, 1) for r in results]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
