"""Precompute throughput: the full sharded-cache pipeline (tar read + JPEG decode + preprocess in worker
processes, tower forward, float16 shards written) against the bare image-tower forward on the same
images already decoded, side by side in one run.  The target is pipeline >= 90% of the bare rate.

Images are synthetic 256x256 JPEGs (img2dataset's default resize) in WebDataset shards.

    python benchmarks/precompute_throughput.py [--images 2048] [--workers 4] [--batch 64] [--size 224]
        [--tower mobilenet_v2] [--device auto] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("LOCKTUNE_QUIET", "1")


def write_shards(folder: Path, count: int, per_shard: int = 1000) -> str:
    """Smooth colour fields with noise: JPEG sizes near real photos' (~15-25 KB at 256 px)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    shards = 0
    for start in range(0, count, per_shard):
        with tarfile.open(folder / f"{shards:05d}.tar", "w") as tar:
            for i in range(start, min(count, start + per_shard)):
                a, b, c = rng.uniform(0.2, 1.0, 3)
                rgb = np.stack([xx * a, yy * b, (xx + yy) * c / 2], -1) + rng.normal(0, 12, (256, 256, 3))
                buffer = io.BytesIO()
                Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
                for name, data in ((f"{i:09d}.jpg", buffer.getvalue()), (f"{i:09d}.txt", f"image {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards += 1
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar") if shards > 1 else str(folder / "00000.tar")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=4, help="decode processes in the pipeline arm")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224, help="tower input size")
    parser.add_argument("--tower", default="mobilenet_v2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both arms (best of each)")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args()

    from locktune.cache.sharded import build_sharded_cache
    from locktune.data.pairs import load_pairs
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    tower = build_image_tower(args.tower, pretrained=False).to(device).eval()  # speed does not depend on weights
    tower = tower.to(memory_format=torch.channels_last)
    preprocess = preprocess_for(tower, args.size)
    root = Path(tempfile.mkdtemp(prefix="locktune-precompute-"))
    start = time.perf_counter()
    pairs = load_pairs([write_shards(root, args.images)])
    made = time.perf_counter() - start
    # The bare arm's input: every image decoded and preprocessed beforehand, outside the timing.
    pixels = torch.stack([preprocess(pairs.images.load(i)) for i in range(len(pairs))])
    if device.type == "cuda":
        pixels = pixels.pin_memory()

    def bare() -> float:
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            for s in range(0, len(pixels), args.batch):
                batch = pixels[s:s + args.batch].to(device, non_blocking=True)
                batch = batch.contiguous(memory_format=torch.channels_last)
                tower(batch).float().cpu()  # the pipeline also brings every batch back to write it
        sync()
        return len(pixels) / (time.perf_counter() - start)

    def pipeline(round_: int) -> float:
        folder = root / f"cache-{round_}"
        start = time.perf_counter()
        build_sharded_cache(tower, preprocess, pairs, folder, shard_size=1024, batch_size=args.batch,
                            workers=args.workers)
        rate = len(pairs) / (time.perf_counter() - start)
        shutil.rmtree(folder)
        return rate

    with torch.no_grad():  # warm-up: cuDNN autotuning and first-call allocations stay out of both arms
        tower(pixels[:args.batch].to(device).contiguous(memory_format=torch.channels_last))
    rates = {"bare_forward": [], "pipeline": []}
    for r in range(args.rounds):
        rates["bare_forward"].append(bare())
        rates["pipeline"].append(pipeline(r))
    best = {k: max(v) for k, v in rates.items()}
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "tower": args.tower, "size": args.size, "batch": args.batch, "images": len(pairs),
              "workers": args.workers, "torch_threads": torch.get_num_threads(), "made_shards_s": round(made, 1),
              "images_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
              "pipeline_over_bare": round(best["pipeline"] / best["bare_forward"], 3)}
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
