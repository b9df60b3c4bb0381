"""Precompute throughput: locktune's image-embedding precompute against the bare image-tower forward on the
same images already decoded and preprocessed, side by side in one run.  The target is pipeline >= 90%
of the bare rate.

Two precompute paths (`--pipeline`):

    sharded   `build_sharded_cache`: tar read + JPEG decode + preprocess in worker processes, tower
              forward, float16 shards written (images in WebDataset shards)
    features  `compute_features` (what `cached_features` runs for the embedding cache): files decoded and
              preprocessed in DataLoader workers, tower forward, float32 features (images as loose files)

Images (`--source jpeg`, the default) are synthetic 256x256 JPEGs (img2dataset's default resize, sizes near
real photos'); `--source emoji` (or any `load_pairs` name or path) uses real image files instead.
The tower is any image-tower name: a bundled one (`mobilenet_v2`, `efficientnet_lite0`) or a tower users
bring (`hf:/path/to/folder`).  `--make-small-vit DIR` writes a ViT-S/16-shaped random-init
`transformers.ViTModel` (224 px, hidden 384, 12 layers, 6 heads, MLP 1536) with its `ViTImageProcessorPil`
config to DIR, with no network, and benchmarks `hf:DIR` unless `--tower` names another tower.

The arms alternate (bare, pipeline, pipeline, bare, ...) for `--rounds` rounds, so machine noise hits
both; the bare arm runs the tower under torch.inference_mode on the preprocessed tensors at the same batch
size, in the memory format the tower's weights are in.  Reported: each round's images/s, the best of each
arm and their ratio (`pipeline_over_bare`), the median of the rounds' paired ratios, and each arm's CPU
time per image (this process and its workers; less sensitive than wall time to other jobs).

    python benchmarks/precompute_throughput.py [--pipeline sharded] [--images 2048] [--workers 4]
        [--batch-size 64] [--image-size 0] [--tower mobilenet_v2] [--source jpeg] [--device auto] [--rounds 2]
    python benchmarks/precompute_throughput.py --pipeline features --make-small-vit /tmp/vit-s16 \\
        --images 256 --batch-size 32 --workers 1 --rounds 6
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("LOCKTUNE_QUIET", "1")


def synthetic_jpegs(count: int):
    """Smooth colour fields with noise: JPEG sizes near real photos' (~15-25 KB at 256 px)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    for _ in range(count):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        rgb = np.stack([xx * a, yy * b, (xx + yy) * c / 2], -1) + rng.normal(0, 12, (256, 256, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        yield buffer.getvalue()


def write_shards(folder: Path, count: int, per_shard: int = 1000) -> str:
    """The synthetic JPEGs in WebDataset shards (with a caption each); the brace pattern naming them."""
    shards = 0
    jpegs = synthetic_jpegs(count)
    for start in range(0, count, per_shard):
        with tarfile.open(folder / f"{shards:05d}.tar", "w") as tar:
            for i in range(start, min(count, start + per_shard)):
                for name, data in ((f"{i:09d}.jpg", next(jpegs)), (f"{i:09d}.txt", f"image {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards += 1
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar") if shards > 1 else str(folder / "00000.tar")


def write_files(folder: Path, count: int) -> list[Path]:
    """The synthetic JPEGs as loose files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(synthetic_jpegs(count)):
        paths.append(folder / f"{i:09d}.jpg")
        paths[-1].write_bytes(data)
    return paths


def make_small_vit(folder: str | Path, layers: int = 12, seed: int = 0) -> Path:
    """A ViT-S/16-shaped random-init ViTModel (224 px) and its image-processor config, saved to `folder`.

    No pooler: a random tanh pooler is not what a locked tower would pool with, so the tower uses the
    class token (locktune drops untrained pooler weights anyway)."""
    import transformers as t

    torch.manual_seed(seed)
    config = t.ViTConfig(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=layers,
                         num_attention_heads=6, intermediate_size=1536)
    t.utils.logging.disable_progress_bar()
    t.ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    t.ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder)
    return Path(folder)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the DataLoader workers): less sensitive than
    wall time to other jobs on a shared machine, and it shows what the pipeline costs beyond the forward."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=("sharded", "features"), default="sharded",
                        help="sharded: build_sharded_cache over WebDataset shards; features: compute_features "
                             "(the embedding cache's precompute) over image files")
    parser.add_argument("--tower", default=None, help="image tower name: mobilenet_v2 (default), efficientnet_lite0, "
                                                      "hf:FOLDER, ...")
    parser.add_argument("--make-small-vit", metavar="DIR", default=None,
                        help="write a ViT-S/16-shaped random-init HF ViT (+ processor config) to DIR first; the "
                             "tower is hf:DIR unless --tower is given")
    parser.add_argument("--vit-layers", type=int, default=12, help="encoder layers of --make-small-vit's ViT")
    parser.add_argument("--source", default="jpeg", help="jpeg: synthetic 256 px JPEGs; else a load_pairs source "
                                                         "name or path (e.g. emoji), at most --images of it")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=4, help="decode processes in the pipeline arm")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=int, default=64)
    parser.add_argument("--image-size", "--size", dest="size", type=int, default=0,
                        help="tower input size (0: the tower's own, 224 for the bundled towers)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="what the tower runs in, in both arms (bf16: autocast, as train.precision=bf16)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both arms")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args()

    from locktune.cache.embedding_cache import compute_features
    from locktune.cache.sharded import build_sharded_cache
    from locktune.data.images import FileImages
    from locktune.data.pairs import load_pairs
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.make_small_vit:
        make_small_vit(args.make_small_vit, args.vit_layers)
    tower_name = args.tower or (f"hf:{Path(args.make_small_vit).resolve()}" if args.make_small_vit else "mobilenet_v2")
    from locktune.runtime.placement import resolve_device, tower_autocast

    device = resolve_device(args.device)
    # Speed does not depend on the weights; an hf: folder's own (random or not) are loaded as saved.
    tower = build_image_tower(tower_name, pretrained=tower_name.startswith("hf:")).to(device).eval()
    preprocess = preprocess_for(tower, args.size)
    root = Path(tempfile.mkdtemp(prefix="locktune-precompute-"))
    start = time.perf_counter()
    pairs = None  # the sharded pipeline stores captions too
    if args.source != "jpeg":
        pairs = load_pairs([args.source], args.images)
    elif args.pipeline == "sharded":
        pairs = load_pairs([write_shards(root, args.images)])
    images = pairs.images if pairs is not None else FileImages(write_files(root / "images", args.images))
    made = time.perf_counter() - start
    # The bare arm's input: every image decoded and preprocessed beforehand, outside the timing.
    pixels = torch.stack([preprocess(images.load(i)) for i in range(len(images))])
    if device.type == "cuda":
        pixels = pixels.pin_memory()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # Bundled conv towers hold channels_last weights: the bare arm feeds them that layout (their fastest);
    # a ViT's weights are plain, so it gets plain tensors (the pipeline converts every batch regardless).
    channels_last = any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                        for p in tower.parameters())
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def bare() -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(pixels), args.batch):
                batch = pixels[s:s + args.batch].to(device, non_blocking=True).contiguous(memory_format=layout)
                with tower_autocast(device, args.precision):
                    out = tower(batch)
                out.float().cpu()  # the pipeline brings every batch back too
        sync()
        return len(pixels) / (time.perf_counter() - start)

    def pipeline(round_: int) -> float:
        folder = root / f"cache-{round_}"
        start = time.perf_counter()
        if args.pipeline == "sharded":
            build_sharded_cache(tower, preprocess, pairs, folder, shard_size=1024, batch_size=args.batch,
                                workers=args.workers)
        else:
            compute_features(tower, preprocess, images, batch_size=args.batch, workers=args.workers,
                             precision=args.precision)
        sync()
        rate = len(images) / (time.perf_counter() - start)
        shutil.rmtree(folder, ignore_errors=True)
        return rate

    with torch.inference_mode():  # warm-up: cuDNN autotuning and first-call allocations stay out of both arms
        for batch in (pixels[:args.batch], pixels[:args.batch].contiguous(memory_format=torch.channels_last)):
            tower(batch.to(device))
    rates: dict[str, list[float]] = {"bare_forward": [], "pipeline": []}
    cpu: dict[str, list[float]] = {"bare_forward": [], "pipeline": []}
    for r in range(args.rounds):  # ABBA order: neither arm always runs first
        for arm in (("bare_forward", "pipeline") if r % 2 == 0 else ("pipeline", "bare_forward")):
            used = cpu_seconds()
            rates[arm].append(bare() if arm == "bare_forward" else pipeline(r))
            cpu[arm].append((cpu_seconds() - used) / len(images))
    best = {k: max(v) for k, v in rates.items()}
    paired = [p / b for p, b in zip(rates["pipeline"], rates["bare_forward"])]
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "pipeline": args.pipeline, "tower": tower_name, "tower_params_m": round(
                  sum(p.numel() for p in tower.parameters()) / 1e6, 1),
              "size": preprocess.image_size, "batch": args.batch, "precision": args.precision, "source": args.source, "images": len(images),
              "workers": args.workers, "torch_threads": torch.get_num_threads(), "bare_layout": "channels_last" if
              channels_last else "plain", "made_images_s": round(made, 1),
              "images_per_s": {k: [round(x, 2) for x in v] for k, v in rates.items()},
              "best_images_per_s": {k: round(v, 2) for k, v in best.items()},
              "pipeline_over_bare": round(best["pipeline"] / best["bare_forward"], 3),
              "paired_ratio_median": round(statistics.median(paired), 3),
              "cpu_ms_per_image": {k: [round(1000 * x, 1) for x in v] for k, v in cpu.items()},
              "load_average_1min": round(os.getloadavg()[0], 2)}
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
