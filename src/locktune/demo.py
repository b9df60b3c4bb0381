"""The main job: built-in data -> cached image embeddings -> train LU -> evaluate -> table + JSON."""

from __future__ import annotations

import time
from pathlib import Path

from locktune.config import RunConfig
from locktune.extras import missing_extra


def without_missing_reporters(config: RunConfig) -> RunConfig:
    """The demo's TensorBoard log is a bonus, not a requirement: a pip install without the extra gets one line
    saying so and trains anyway (`locktune train` with the same setting refuses, since a user asked for it)."""
    from locktune.report_to import SINKS, sink_names

    sink_names()  # registers the sinks
    keep = []
    for name in config.train.report_to:
        extra = SINKS.get(name).extra
        if extra and missing_extra(extra):
            print(f"locktune demo: train.report_to={name} skipped: its package is not installed "
                  f"(pip install 'locktune[{extra}]' to get it)")
        else:
            keep.append(name)
    config.train.report_to = keep
    return config


def run_demo(config: RunConfig) -> int:
    from locktune.data.offline_assets import check_assets
    from locktune.eval.driver import check_eval_config, evaluate_model
    from locktune.saved_model import RUN_MODEL_DIR, WEIGHTS
    from locktune.train.trainer import train

    check_assets("locktune demo")  # every missing package named at once, before any work
    check_eval_config(config)
    config = without_missing_reporters(config)
    started = time.time()
    print(f"locktune demo: setting {config.model.setting}, image tower {config.model.image_tower} "
          f"({config.model.image_size or 'its own '}px), text tower {config.model.text_tower}, "
          f"data {'+'.join(config.data.sources)}, {config.train.steps} steps of {config.train.batch_size} pairs")
    result = train(config, overwrite=True)  # the demo's run folder is its own: a rerun starts over
    print(f"trained in {result.seconds:.0f}s (image forward passes for training: {result.image_forward_passes}); "
          f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
    run_dir = Path(config.run_dir)
    print()
    evaluate_model(result.model, config, run_dir / RUN_MODEL_DIR / WEIGHTS, run_dir / "results.json")
    print(f"demo finished in {time.time() - started:.0f}s")
    return 0
