"""Evaluation during training (`train.eval_every`): before the first step of a new run and every N steps, the
first process evaluates `train.eval_suite` on the model as it stands, reports the numbers to every sink
(`report_to/`) and offers the model to `train.keep_best` (`train/best_model.py`); the others wait.

Evaluating leaves training exactly as it was, so a run with eval_every trains bit for bit as one without
(tests/test_eval_every.py).  Around each evaluation (`training_untouched`) the random streams (CPU, device,
numpy, Python), every module's train/eval mode (which the unlock schedule and train.batchnorm set per module)
and every buffer (batch norm's running statistics) are put back as they were; evaluation runs under no_grad,
outside the step's autocast, and reads the embedding cache through its own readers.  The validation task
scores the pairs this run held out (`data.validation_fraction`), the very PairSet training split off.

Under torchrun the first process evaluates alone (every process holds the whole model; FSDP is refused at
load) and the others wait in `distributed.wait_for_peers` (a gloo group of its own with a 24-hour limit, as
for a precompute's uneven shards) rather than under the training collectives' five minutes: a long evaluation
is not taken for a hung process, and a process that dies still fails the wait at once.
"""

from __future__ import annotations

import contextlib
import sys
import time

import torch

from locktune.config import RunConfig
from locktune.errors import LocktuneError
from locktune.runtime import distributed, placement
from locktune.train.best_model import BestModel, parse_keep_best

VALIDATION = "validation"


def evaluation_tasks(config: RunConfig) -> list:
    """train.eval_suite's tasks, each name checked (and train.keep_best's task) before any data is loaded."""
    from locktune.eval.benchmarks import check_benchmark_name
    from locktune.eval.suites import SUITES, Task, default_task

    if not config.train.eval_every:
        return []
    tasks = []
    for name in config.train.eval_suite:
        if name == VALIDATION:
            tasks.append(Task(VALIDATION, VALIDATION, "", config.eval.max_images_per_benchmark))
        elif name in SUITES:
            tasks += SUITES.get(name)
        else:
            try:
                check_benchmark_name(name)
            except LocktuneError as error:
                raise LocktuneError(f"train.eval_suite '{name}' is not '{VALIDATION}', a suite "
                                    f"({', '.join(SUITES.names())}) or a benchmark: {error}") from None
            tasks.append(default_task(name, config.eval.max_images_per_benchmark))
    tasks = list({task.key: task for task in tasks}.values())
    if any(task.evaluator == VALIDATION for task in tasks) and not config.data.validation_fraction:
        raise LocktuneError("train.eval_suite evaluates the validation pairs, but data.validation_fraction is 0: "
                            "hold some out (e.g. data.validation_fraction=0.1) or name benchmarks in "
                            "train.eval_suite")
    if config.train.keep_best:
        task = parse_keep_best(config.train.keep_best).task
        if task not in {t.key for t in tasks}:
            raise LocktuneError(f"train.keep_best '{config.train.keep_best}' names task '{task}', which "
                                f"train.eval_suite does not run; its tasks: {', '.join(t.key for t in tasks)}")
    return tasks


@contextlib.contextmanager
def training_untouched(model: torch.nn.Module, device: torch.device):
    """Inside: anything (evaluation).  After: the random streams, module modes and buffers as they were."""
    streams = placement.rng_state(device)
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        with torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for buffer, before in buffers:
                buffer.copy_(before)
        for module, training in modes:
            module.training = training
        placement.restore_rng(streams, device)


class TrainingEvaluation:
    """Runs the evaluation tasks at the steps train.eval_every names; `due` says when."""

    def __init__(self, config: RunConfig, tasks: list, held_out, run_dir, resumed: bool):
        self.config, self.tasks, self.held_out = config, tasks, held_out
        self.every = config.train.eval_every if tasks else 0
        self.best = BestModel(run_dir, parse_keep_best(config.train.keep_best), resumed) \
            if self.every and config.train.keep_best and distributed.is_main() else None
        if self.every:
            distributed.prepare_to_wait()  # a collective: every process, at the same point, before uneven work

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def run(self, model, step: int, report) -> None:
        """Evaluate (first process), report to `report(step, values, seconds)` and keep the best; all wait."""
        if distributed.is_main():
            started = time.time()
            with distributed.alone(), training_untouched(model, placement.model_device(model)):
                values, shown = self._evaluate(model)
                kept = self.best.offer(model, step, values) if self.best is not None else False
            seconds = time.time() - started
            report(step, shown, seconds)
            summary = ", ".join(f"{name} {value:.4g}" for name, value in shown.items())
            print(f"locktune: step {step} evaluation ({seconds:.1f}s): {summary}"
                  + (f"; best so far, kept in {self.best.folder}" if kept else ""), file=sys.stderr)
        if self.every:
            distributed.wait_for_peers()

    def _evaluate(self, model) -> tuple[dict[str, float], dict[str, float]]:
        """(every number the tasks returned, the ones reported: each kind's headline and the kept metric), named
        TASK/METRIC."""
        from locktune.eval.evaluation import EVALUATORS, REPORTERS
        from locktune.eval.evaluators.validation import held_out_evaluation
        from locktune.eval.run import remembered_features
        from locktune.eval.suites import task_options

        model.eval()
        workers = self.config.data.image_workers
        values, shown = {}, {}
        with remembered_features():
            for task in self.tasks:
                if task.evaluator == VALIDATION:
                    result = held_out_evaluation(model, self.held_out, task.max_images, workers)
                else:
                    result = EVALUATORS.get(task.evaluator)(model, task.benchmark, task.max_images, workers,
                                                            **task_options(task, tuple(self.config.data.sources),
                                                                          self.config.data))
                numbers = {f"{task.key}/{k}": float(v) for k, v in result.metrics.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
                values.update(numbers)
                headline = REPORTERS.get(result.kind).headline if result.kind in REPORTERS else ()
                shown.update({name: v for name, v in numbers.items() if name.split("/", 1)[1] in headline})
        if self.best is not None and self.best.metric.name in values:
            shown[self.best.metric.name] = values[self.best.metric.name]
        return values, shown
