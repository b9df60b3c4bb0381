"""One LU training step at a huge batch on one machine, through the gradient cache.

Synthetic cached image features and random caption tokens (the step's cost does not depend on their
content).  Reports the step time and the process's peak resident memory; with `--compare-whole` it
also runs the whole-batch step (one autograd graph) on a smaller batch to show what it costs.

    .venv/bin/python benchmarks/huge_batch.py --batch 32768 --chunk 1024 --width 128 --layers 2
    .venv/bin/python benchmarks/huge_batch.py --batch 32768 --chunk 1024 --width 128 --layers 2 --loss sigmoid
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from contextlib import nullcontext

import torch

os.environ.setdefault("LOCKTUNE_QUIET", "1")

from locktune.config import ModelConfig  # noqa: E402
from locktune.model import build_model  # noqa: E402
from locktune.train.step import Batch, gradient_cached_step, whole_step  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32768)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--text-tower", default="clip", choices=["clip", "minilm"])
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--width", type=int, default=256, help="clip tower width")
    parser.add_argument("--layers", type=int, default=4, help="clip tower layers")
    parser.add_argument("--loss", default="global", help="train.loss: global (softmax) | local | sigmoid")
    parser.add_argument("--whole", action="store_true", help="take the step as one graph instead (for comparison)")
    args = parser.parse_args()

    corpus = lambda: ["a photo of a cat", "a drawing of a dog"] * 50  # noqa: E731
    setting = "Lu" if args.text_tower == "clip" else "LU"
    model = build_model(ModelConfig(setting=setting, text_tower=args.text_tower, max_text_len=args.tokens,
                                    text_width=args.width, text_layers=args.layers, image_tower="mobilenet_v2"),
                        corpus=corpus, loss=args.loss)
    del model.image_tower  # image side comes from (synthetic) cached features
    model.train()
    g = torch.Generator().manual_seed(0)
    vocab = model.text_tower.token_embedding.num_embeddings if args.text_tower == "clip" else 30522
    ids = torch.randint(3, vocab, (args.batch, args.tokens), generator=g)
    mask = torch.ones_like(ids)
    features = torch.randn(args.batch, 1280, generator=g).relu()
    batch = Batch(ids, mask, features=features)
    before = peak_rss_mib()
    start = time.perf_counter()
    if args.whole:
        loss = whole_step(model, batch, nullcontext(), args.loss)
    else:
        loss = gradient_cached_step(model, batch, nullcontext(), args.chunk, args.loss)
    seconds = time.perf_counter() - start
    grads = sum(p.grad.norm() ** 2 for p in model.parameters() if p.grad is not None) ** 0.5
    print(json.dumps({"loss_name": args.loss, "batch": args.batch, "chunk": None if args.whole else args.chunk, "text_tower": args.text_tower,
                      "width": args.width, "layers": args.layers, "tokens": args.tokens, "loss": round(float(loss), 4), "grad_norm": round(float(grads), 4),
                      "step_s": round(seconds, 1), "pairs_per_s": round(args.batch / seconds, 1),
                      "peak_rss_mib_before_step": round(before), "peak_rss_mib": round(peak_rss_mib())}, indent=1))


if __name__ == "__main__":
    main()
