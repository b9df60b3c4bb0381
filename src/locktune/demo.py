"""The main job: built-in data -> cached image embeddings -> train LU -> evaluate -> table + JSON."""

from __future__ import annotations

import time
from pathlib import Path

from locktune.config import RunConfig


def run_demo(config: RunConfig) -> int:
    from locktune.eval.run import evaluate
    from locktune.report import results_table, write_results
    from locktune.train.trainer import train

    from locktune.data.offline_assets import check_assets

    check_assets("locktune demo")  # every missing package named at once, before any work
    started = time.time()
    print(f"locktune demo: setting {config.model.setting}, image tower {config.model.image_tower} "
          f"({config.model.image_size}px), text tower {config.model.text_tower}, data {'+'.join(config.data.sources)}, "
          f"{config.train.steps} steps of {config.train.batch_size} pairs")
    result = train(config)
    print(f"trained in {result.seconds:.0f}s (image forward passes for training: {result.image_forward_passes}); "
          f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
    results = evaluate(result.model, config.eval.benchmarks, config.eval.max_images_per_benchmark,
                       workers=config.data.image_workers)
    path = write_results(results, Path(config.run_dir) / "results.json")
    print()
    print(results_table(results))
    print(f"\nresults: {path.resolve()}")
    print(f"demo finished in {time.time() - started:.0f}s")
    return 0
