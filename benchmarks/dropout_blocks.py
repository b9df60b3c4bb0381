"""The plain step's cost of drawing dropout per block of global rows (`train.dropout_rows`) against running the
batch at once (`dropout_rows=0`), with the demo's MiniLM text tower on cached image features (LU).

Blocks keep one graph; what they can cost is smaller matrix products in the text tower.  Arms alternate in
rounds, so machine noise hits every arm.

    .venv/bin/python benchmarks/dropout_blocks.py [--batch 256] [--rows 0 64 128] [--steps 3] [--rounds 3]
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
from locktune.towers.setting import unwrap  # noqa: E402
from locktune.train.step import Batch, whole_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 64, 128])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--text-tower", default="minilm")
    args = parser.parse_args()

    model = build_model(ModelConfig(setting="LU", image_size=64, text_tower=args.text_tower))
    model.train()
    pairs = load_pairs(["emoji"], max_pairs_per_source=args.batch)
    captions = [pairs.captions[i % len(pairs)][0] for i in range(args.batch)]
    tokens = model.tokenize(captions)
    features = torch.randn(args.batch, unwrap(model.image_tower).output_dim)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(rows: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        whole_step(model, Batch(tokens["ids"], tokens["mask"], features=features), nullcontext(), seed=1,
                   dropout_rows=rows)
        optimizer.step()

    for rows in args.rows:  # warm-up
        step(rows)
    seconds = {rows: 0.0 for rows in args.rows}
    for _ in range(args.rounds):
        for rows in args.rows:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(rows)
            seconds[rows] += time.perf_counter() - start
    rate = {rows: args.batch * args.steps * args.rounds / s for rows, s in seconds.items()}
    base = rate[args.rows[0]]
    print(json.dumps({"batch": args.batch, "text_tower": args.text_tower, "threads": torch.get_num_threads(),
                      "pairs_per_s": {f"dropout_rows={r}": round(v, 1) for r, v in rate.items()},
                      f"ratio_to_dropout_rows={args.rows[0]}": {f"dropout_rows={r}": round(v / base, 3)
                                                                for r, v in rate.items()}}, indent=1))


if __name__ == "__main__":
    main()
