"""Benchmark suites: named lists of (evaluator, benchmark) tasks, run into one results dict.

`offline` is everything that installs from the package registries and runs here; users add suites of
their local copies (e.g. ImageNet and its variants) the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from locktune.eval.benchmarks import ClassificationSet, MultilingualRetrievalSet, get_benchmark
from locktune.eval.evaluation import EVALUATORS, Evaluation
from locktune.eval.evaluators.ood_loss import DEFAULT_TRAIN_SOURCES
from locktune.eval.run import remembered_features
from locktune.registry import Registry


@dataclass(frozen=True)
class Task:
    key: str  # the name in the results
    evaluator: str  # an evaluator's name (eval/evaluators/)
    benchmark: str  # a benchmark name (for ood_loss: the held-out pairs; for validation: none, "")
    max_images: int = 1000  # 0 = every image
    draws: int = 0  # fewshot: random draws of the shots (0 = the evaluator's default)


SUITES: Registry[list[Task]] = Registry("suite")
SUITES.register("offline")([
    *(Task(n, "zero_shot", n) for n in ("fashion_mnist", "mnist", "animal_mnist", "sklearn_digits",
                                         "tuxpaint_categories", "openmoji_groups", "foolbox_imagenet",
                                         "foolbox_cifar10", "foolbox_cifar100")),
    Task("tuxpaint_retrieval", "retrieval", "tuxpaint_retrieval"),
    # 100 stamps per language: 67 languages x 950 captions would be ~64k text forwards on a CPU.
    Task("tuxpaint_multilingual", "multilingual", "tuxpaint_multilingual", 100),
    *(Task(f"fewshot/{n}", "fewshot", n) for n in ("fashion_mnist", "mnist", "animal_mnist", "sklearn_digits",
                                                    "tuxpaint_categories")),
    Task("ood_loss", "ood_loss", "tuxpaint_retrieval", 1024),
])
# What every arm of `locktune ablate` is judged on: the paper's four views (zero-shot, retrieval, few-shot
# probe of the image tower, training vs out-of-distribution loss), sized so that an arm whose image tower
# was trained (and so cannot use the embedding cache) evaluates in well under a minute on 2 CPU cores.
SUITES.register("ablation")([
    Task("fashion_mnist", "zero_shot", "fashion_mnist", 500),
    Task("animal_mnist", "zero_shot", "animal_mnist", 500),
    Task("tuxpaint_categories", "zero_shot", "tuxpaint_categories", 1000),
    Task("tuxpaint_retrieval", "retrieval", "tuxpaint_retrieval", 1000),
    Task("fewshot/fashion_mnist", "fewshot", "fashion_mnist", 500),
    Task("fewshot/tuxpaint_categories", "fewshot", "tuxpaint_categories", 1000),
    Task("ood_loss", "ood_loss", "tuxpaint_retrieval", 1024),
])
# The tower-settings study (issue 15, design 2): whole test sets, so that differences of a point or two
# between arms are measurable per image (zero-shot results record each image's outcome); benchmarks
# without the near-duplicates of training images where those exist; the run's own held-out validation pairs
# (data.validation_fraction); 10 few-shot draws.  Image counts: fashion_mnist 10,000, animal_mnist 3,000 (of 10,000),
# tuxpaint_categories_clean 913, openmoji_groups 1,914 (no near-duplicates: its _clean set is the same
# images), tuxpaint_retrieval_clean 913 images, validation ~fraction x the run's pairs.
SUITES.register("towers")([
    Task("fashion_mnist", "zero_shot", "fashion_mnist", 0),
    Task("animal_mnist", "zero_shot", "animal_mnist", 3000),
    Task("tuxpaint_categories_clean", "zero_shot", "tuxpaint_categories_clean", 0),
    Task("near_ood/openmoji_groups", "zero_shot", "openmoji_groups", 0),
    Task("tuxpaint_retrieval_clean", "retrieval", "tuxpaint_retrieval_clean", 0),
    Task("validation", "validation", "", 0),
    # The probe on the Animal-MNIST images the zero-shot task already embedded (a trained tower runs over
    # them once).  Not on a Fashion-MNIST sample (3,000 more images through every trained tower, ~30 s an
    # arm), nor on the Tux Paint categories (two have 3 and 6 clean stamps: only the 1-shot probe fits).
    Task("fewshot/animal_mnist", "fewshot", "animal_mnist", 3000, draws=10),
    Task("ood_loss", "ood_loss", "tuxpaint_retrieval_clean", 1024),
])
# Beyond LiT on the same cache (issue 27): the towers suite's zero-shot and retrieval tasks, and how much of what
# the locked image features know zero-shot reaches (a logistic probe on a hash-chosen half of the same images
# the zero-shot tasks embed, so the probe costs no image forward pass).
SUITES.register("beyond_lit")([
    *(t for t in SUITES.get("towers") if t.evaluator in ("zero_shot", "retrieval")),
    Task("probe_share/fashion_mnist", "probe_share", "fashion_mnist", 0),
    Task("probe_share/animal_mnist", "probe_share", "animal_mnist", 3000),
])
# Multilingual retrieval on the Tux Paint half that `tuxpaint_half_a*` training never sees.
SUITES.register("ablation_multilingual")([
    Task("tuxpaint_multilingual_half_b", "multilingual", "tuxpaint_multilingual_half_b", 0),
])


def default_task(name: str, max_images: int) -> Task:
    """What `eval.benchmarks=[NAME]` runs: the evaluator that fits the benchmark's kind."""
    benchmark = get_benchmark(name, max_images)
    if isinstance(benchmark, ClassificationSet):
        return Task(name, "zero_shot", name, max_images)
    if isinstance(benchmark, MultilingualRetrievalSet):
        return Task(name, "multilingual", name, max_images)
    return Task(name, "retrieval", name, max_images)


def task_options(task: Task, train_sources, data) -> dict:
    """The keyword arguments an evaluator is called with: `train_sources` always; the run's DataConfig
    (`data=`, for the validation pairs) and the task's `draws` only when given, so evaluators written
    before them are called as they always were."""
    options = {"train_sources": train_sources}
    if data is not None:
        options["data"] = data
    if task.draws:
        options["draws"] = task.draws
    return options


def run_tasks(model, tasks: list[Task], workers: int = 1, train_sources=DEFAULT_TRAIN_SOURCES,
              log: Callable[[str], None] = print, data=None) -> dict[str, Evaluation]:
    """Run each task in order; each result's metrics gain `seconds`.  `data` is the run's DataConfig (its
    sources, max_pairs_per_source, validation_fraction, max_train_pairs): what the validation task holds
    out, and the training pairs the held-out loss compares with."""
    model.eval()
    out: dict[str, Evaluation] = {}
    with remembered_features():  # tasks that share images run a trained image tower over them once
        for task in tasks:
            start = time.time()
            result = EVALUATORS.get(task.evaluator)(model, task.benchmark, task.max_images, workers,
                                                    **task_options(task, train_sources, data))
            result.metrics["seconds"] = round(time.time() - start, 1)
            out[task.key] = result
            log(f"  {task.key}: {result.metrics['seconds']}s")
    return out
