"""Training memory against dataset size: LU steps read from a 10,000-pair and a 1,000,000-pair sharded
cache (synthetic vectors and captions, keyed to the real EfficientNet-Lite0 at 128 px so the trainer
accepts them).  Each size trains in its own process; its peak resident memory is reported side by side.

    .venv/bin/python benchmarks/train_from_cache.py --sizes 10000,1000000 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 1280


def write_cache(folder: Path, count: int, shard_size: int, image_size: int) -> None:
    from locktune.cache.sharded import ShardWriter
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    tower = build_image_tower("efficientnet_lite0", pretrained=True)
    writer = ShardWriter(folder, {"tower": tower.name, "weights": tower.weights_fingerprint(),
                                  "preprocess": preprocess_for(tower, image_size).describe(), "source": "synthetic",
                                  "images": f"synthetic-{count}", "count": count, "shard_size": shard_size,
                                  "dtype": "float16", "views": 1})
    rng = np.random.default_rng(0)
    for shard in range(writer.shard_count()):
        rows = writer.shard_range(shard)
        vectors = np.abs(rng.standard_normal((len(rows), DIM), dtype=np.float32))
        writer.write(shard, vectors, [f"{i:09d}" for i in rows], [[f"a photo of thing number {i}"] for i in rows], {})
    writer.finish({})


def child(folder: str, steps: int, image_size: int) -> None:
    """Runs in its own process: train from the cache, print peak RSS and step rate as JSON."""
    os.environ.setdefault("LOCKTUNE_QUIET", "1")
    from locktune.config import load_config
    from locktune.train.trainer import train

    with tempfile.TemporaryDirectory() as run:
        config = load_config(None, [f"data.embedding_cache={folder}", f"model.image_size={image_size}",
                                    f"train.steps={steps}", "train.warmup_steps=1", "train.batch_size=64",
                                    f"train.checkpoint_every={steps}", f"run_dir={run}"])
        start = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - start
    print(json.dumps({"steps": result.steps_done, "seconds_total": round(seconds, 1),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--shard-size", type=int, default=8192)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--keep", help="folder to build the caches in (default: a temporary one)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps, args.image_size)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="locktune-train-cache-"))
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        folder = root / f"synthetic-{size}"
        if not (folder / "manifest.json").is_file():
            start = time.perf_counter()
            write_cache(folder, size, args.shard_size, args.image_size)
            print(f"wrote {size:,}-pair cache in {time.perf_counter() - start:.0f}s", file=sys.stderr)
        done = subprocess.run([sys.executable, __file__, "--child", str(folder), "--steps", str(args.steps),
                               "--image-size", str(args.image_size)], capture_output=True, text=True, check=True)
        rows.append({"pairs": size, **json.loads(done.stdout.strip().splitlines()[-1])})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
