"""The one evaluation driver (`locktune eval` and the demo): a config's tasks run on a model, written as
results.json (each result with its kind and the model's and dataset's fingerprints), a markdown table
beside it, and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from locktune.config import RunConfig


def tasks_for(config: RunConfig) -> list:
    """`eval.suite`'s tasks, then each of `eval.benchmarks` the suite does not already cover."""
    from locktune.eval.suites import SUITES, default_task

    suite = SUITES.get(config.eval.suite) if config.eval.suite else []
    covered = {task.benchmark for task in suite}
    return list(suite) + [default_task(name, config.eval.max_images_per_benchmark)
                          for name in config.eval.benchmarks if name not in covered]


# What `locktune eval` reads of the training section: where and how precisely the model runs.
EVAL_READS_TRAIN = ("train.device", "train.precision")


def ignored_overrides(overrides: list[str]) -> list[str]:
    """One line for each command-line override `eval` does not apply: the model's settings (`model.*`) come from
    the model's own folder, and eval trains nothing (`train.*` but device and precision, `run_dir`)."""
    lines = []
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key.startswith("model.") or key == "model":
            lines.append(f"{text} ignored: a trained model's settings come from its own folder (its run's config); "
                         "train another model to change them")
        elif (key.startswith("train.") and key not in EVAL_READS_TRAIN) or key == "run_dir":
            lines.append(f"{text} ignored: eval trains nothing (of train.* it reads only "
                         f"{' and '.join(EVAL_READS_TRAIN)})")
    return lines


def check_eval_config(config: RunConfig) -> None:
    """Unknown suites and benchmarks, and a missing plotting package, fail before any model is loaded."""
    from locktune.eval.benchmarks import check_benchmark_name
    from locktune.eval.suites import SUITES

    if config.eval.suite:
        SUITES.get(config.eval.suite)
    for name in config.eval.benchmarks:
        check_benchmark_name(name)
    if config.eval.plots:
        from locktune.extras import require_extra

        require_extra("plots", "the evaluation plots", "or give eval.plots=false")


def evaluate_model(model, config: RunConfig, model_file: Path, out: Path,
                   log: Callable[[str], None] = print) -> dict[str, dict]:
    """Run the config's tasks on `model` (a TwoTower) and write results.json, its markdown table and plots
    to `out` and beside it; returns the results."""
    from locktune.eval.suites import run_tasks
    from locktune.eval.results import file_fingerprint, markdown_table, results_table, write_results

    evaluations = run_tasks(model, tasks_for(config), workers=config.data.image_workers,
                            train_sources=tuple(config.data.sources), log=log, data=config.data)
    fingerprint = file_fingerprint(model_file)
    results = {key: {**evaluation.recorded(), "model_fingerprint": fingerprint}
               for key, evaluation in evaluations.items()}
    write_results(results, out)
    table = out.with_suffix(".md")
    table.write_text(f"Model `{model_file}` (sha256 {fingerprint}), setting {model.config.setting}, "
                     f"{model.config.image_tower} at {model.preprocess.image_size}px + {model.config.text_tower}.\n\n"
                     + markdown_table(results))
    log(results_table(results))
    if config.eval.plots:
        from locktune.eval.plots import plot_all

        folder = out.parent / f"{out.stem}_plots"
        log(f"plots: {len(plot_all(evaluations, folder))} in {folder}")
    log(f"results: {out.resolve()}\ntable: {table.resolve()}")
    return results
