"""What an evaluator returns and how each kind of result is reported, in two registries by name.

An evaluator (`EVALUATORS`) runs on a model and a benchmark and returns an `Evaluation`: its kind, its
metrics (what results.json and the ablation records hold) and the details its plots need.  A kind's
`Reporter` (`REPORTERS`) says how results of that kind are shown: the terminal table's columns, the
markdown table, the plots, the ablation summary values and per-task columns.  Both are registered next to
the evaluator itself (`eval/evaluators/*.py`), so adding an evaluator is adding one file there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from locktune.registry import Registry


@dataclass
class Evaluation:
    kind: str  # a key of REPORTERS
    # Numbers, plus a few descriptive strings and (zero-shot) the "per_image" outcomes: reports show only the
    # numbers their kind names, so anything else here is recorded without being tabled.
    metrics: dict[str, float | str | dict]
    details: dict = field(default_factory=dict)  # what the kind's plots draw (logits, similarity, images)

    def recorded(self) -> dict:
        """The metrics as results.json and the ablation records hold them, with the kind."""
        return {**self.metrics, "kind": self.kind}


@dataclass(frozen=True)
class SummaryValue:
    """One number per ablation record, from every result of the reporter's kind (e.g. mean zero-shot top-1)."""

    key: str  # the record key (e.g. "mean_zero_shot_top1")
    title: str  # the column title in the grid reports
    value: Callable[[dict[str, dict]], float | None]  # {task: metrics} of this kind -> value
    column: bool = True  # a column of the grid reports' results table (False: read by the findings only)


def _no_plots(name: str, evaluation: Evaluation, folder: Path) -> list[Path]:
    return []


@dataclass(frozen=True)
class Reporter:
    kind: str
    headline: tuple[str, ...]  # the terminal table's metrics, in order
    markdown: Callable[[dict[str, dict]], list[str]]  # {task: metrics} of this kind -> markdown lines
    recognise: Callable[[dict], bool]  # metrics written before results recorded their kind
    plots: Callable[[str, Evaluation, Path], list[Path]] = _no_plots
    summaries: tuple[SummaryValue, ...] = ()
    task_columns: tuple[str, ...] = ()  # the per-task metrics an ablation report shows
    chance: str = ""  # the metric that is chance for those columns


EVALUATORS: Registry[Callable[..., Evaluation]] = Registry("evaluator")
REPORTERS: Registry[Reporter] = Registry("result kind")
_ORDER: list[str] = []  # reporters in registration order: the order of tables and summary columns


def on_benchmark(name: str, options: tuple[str, ...] = ()) -> Callable:
    """Register `run(model, benchmark, workers, **options) -> Evaluation` as the evaluator `name` over a named
    benchmark: the benchmark is looked up (sampled to max_images) and the result stamped with its dataset
    fingerprint.  `options` are the keyword arguments of the call (e.g. a task's `draws`) passed on to `run`."""
    def register(run: Callable[..., Evaluation]) -> Callable[..., Evaluation]:
        def evaluate(model, benchmark_name: str, max_images: int, workers: int, **given) -> Evaluation:
            from locktune.eval.benchmarks import get_benchmark

            benchmark = get_benchmark(benchmark_name, max_images)
            result = run(model, benchmark, workers, **{k: given[k] for k in options if k in given})
            result.metrics["dataset_fingerprint"] = benchmark.fingerprint()
            return result

        EVALUATORS.register(name)(evaluate)
        return run

    return register


def register_reporter(reporter: Reporter) -> Reporter:
    REPORTERS.register(reporter.kind)(reporter)
    _ORDER.append(reporter.kind)
    return reporter


def reporters() -> list[Reporter]:
    """Every reporter, in registration order (importing the evaluators registers them)."""
    import locktune.eval.evaluators  # noqa: F401

    return [REPORTERS.get(kind) for kind in _ORDER]


def kind_of(metrics: dict) -> str:
    """A result's kind: recorded in it, or (results written before kinds were recorded) recognised."""
    if "kind" in metrics:
        return metrics["kind"]
    return next(r.kind for r in reporters() if r.recognise(metrics))


def of_kind(results: dict[str, dict], kind: str) -> dict[str, dict]:
    return {name: metrics for name, metrics in results.items() if kind_of(metrics) == kind}


def pct(metrics: dict, key: str, std_key: str | None = None) -> str:
    """A share as a percentage for tables ('-' when absent), with its spread when given."""
    if key not in metrics:
        return "-"
    text = f"{100 * metrics[key]:.1f}"
    if std_key and std_key in metrics:
        text += f" ± {100 * metrics[std_key]:.1f}"
    return text


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
