"""LU training throughput: cached image embeddings vs running the locked image tower every step.

The second arm is what the peers do (open_clip --lock-image): the frozen tower still runs forward on
every batch.  Both arms use the same model, batch, captions and optimizer; images are decoded and
preprocessed once beforehand so the comparison isolates the tower's forward cost (a real loader would
also pay decoding in the second arm).  Arms alternate in rounds, so machine noise hits both.

    .venv/bin/python benchmarks/cache_vs_forward.py [--steps 6] [--rounds 3] [--image-size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext

import torch

os.environ.setdefault("LOCKTUNE_QUIET", "1")

from locktune.config import ModelConfig  # noqa: E402
from locktune.data.pairs import load_pairs  # noqa: E402
from locktune.model import build_model  # noqa: E402
from locktune.train.step import Batch, whole_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per arm per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--text-tower", default="minilm")
    args = parser.parse_args()

    model = build_model(ModelConfig(setting="LU", image_size=args.image_size, text_tower=args.text_tower))
    model.train()
    pairs = load_pairs(["emoji"], max_pairs_per_source=args.batch)
    pixels = torch.stack([model.preprocess(pairs.images.load(i)) for i in range(args.batch)])
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    tokens = model.tokenize([c[0] for c in pairs.captions])
    with torch.no_grad():
        features = model.image_features(pixels)  # what the cache would hold
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(use_cache: bool) -> None:
        batch = Batch(tokens["ids"], tokens["mask"])
        if use_cache:
            batch.features = features
        else:
            batch.features = model.image_features(pixels)  # the locked tower's forward, every step
        optimizer.zero_grad(set_to_none=True)
        whole_step(model, batch, nullcontext())
        optimizer.step()

    for arm in (True, False):  # warm-up
        step(arm)
    seconds = {"cached": 0.0, "tower_forward": 0.0}
    for _ in range(args.rounds):
        for name, use_cache in (("cached", True), ("tower_forward", False)):
            start = time.perf_counter()
            for _ in range(args.steps):
                step(use_cache)
            seconds[name] += time.perf_counter() - start
    pairs_per_s = {k: args.batch * args.steps * args.rounds / v for k, v in seconds.items()}
    result = {"batch": args.batch, "image_size": args.image_size, "text_tower": args.text_tower,
              "threads": torch.get_num_threads(), "pairs_per_s": {k: round(v, 1) for k, v in pairs_per_s.items()},
              "speedup_cached_over_forward": round(pairs_per_s["cached"] / pairs_per_s["tower_forward"], 2)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
