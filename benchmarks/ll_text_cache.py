"""LL training throughput: both towers' outputs read from their caches vs today's LL (the locked text tower
run on every batch).

Both arms are the trainer's own step (`_next_batch`, forward and backward, the update) on the same model,
optimizer, batch plan and image cache; the only difference is the text side: rows of the text cache
(`cache/text_side.py`, data.text_cache=true) or the captions tokenized and run through the locked tower
(data.text_cache=false).  Both caches are filled before the clock starts; arms alternate in rounds, so machine
noise hits both.  The demo's towers and data: EfficientNet-Lite0 at 128 px, MiniLM, batch 64.

    LOCKTUNE_NPM_PREFIX=$PWD/.deps/npm .venv/bin/python benchmarks/ll_text_cache.py [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

os.environ.setdefault("LOCKTUNE_QUIET", "1")

from locktune.config import RunConfig  # noqa: E402
from locktune.data.pairs import load_pairs  # noqa: E402
from locktune.model import build_model  # noqa: E402
from locktune.runtime import placement  # noqa: E402
from locktune.train import trainer  # noqa: E402
from locktune.train.batches import BatchPlan  # noqa: E402
from locktune.train.images import TrainingImages  # noqa: E402
from locktune.train.texts import TrainingTexts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--sources", default="openclipart,emoji", help="pair sources (the demo's by default)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    config = RunConfig()
    config.model.setting, config.model.image_tower, config.model.text_tower = "LL", "efficientnet_lite0", "minilm"
    config.model.image_size, config.train.batch_size = args.image_size, args.batch
    config.data.sources, config.train.device = args.sources.split(","), args.device
    device = placement.resolve_device(args.device)
    placement.use(device)
    pairs = load_pairs(config.data.sources, config.data.max_pairs_per_source)
    model = build_model(config.model, loss=config.train.loss, seed=config.train.seed)
    model.to(device)
    started = time.perf_counter()
    images = TrainingImages.open(model, config, pairs, None, pairs.captions)  # the image cache, filled once
    texts = {"two_caches": TrainingTexts.open(model, config, pairs.captions, None),  # the text cache, filled once
             "live_text_forward": TrainingTexts()}
    fill_s = time.perf_counter() - started
    plan = BatchPlan(images.caption_counts, args.batch, config.train.seed)
    state = trainer._optimization(model, config, None, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    autocast = placement.tower_autocast(device, config.train.precision)
    model.train()
    with TemporaryDirectory() as run_dir:
        def steps(arm: str, count: int) -> None:
            for _ in range(count):
                batch = trainer._next_batch(state.step, plan, images, texts[arm], pairs.captions, model, args.batch,
                                            device)
                loss = trainer._forward_backward(state, batch, config, autocast, args.batch)
                trainer._update(state, loss, trainable, config, Path(run_dir))

        for arm in texts:  # warm-up
            steps(arm, 2)
        seconds = dict.fromkeys(texts, 0.0)
        for _ in range(args.rounds):
            for arm in texts:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                steps(arm, args.steps)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[arm] += time.perf_counter() - start
    steps_per_s = {arm: args.steps * args.rounds / s for arm, s in seconds.items()}
    result = {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch,
              "image_size": args.image_size, "pairs": len(pairs), "captions": int(sum(map(len, pairs.captions))),
              "caches_filled_s": round(fill_s, 1), "steps_per_s": {k: round(v, 2) for k, v in steps_per_s.items()},
              "ratio_two_caches_over_live": round(steps_per_s["two_caches"] / steps_per_s["live_text_forward"], 2)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
