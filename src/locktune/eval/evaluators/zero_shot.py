"""Zero-shot classification: each image against one prompt-ensemble embedding per class name."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from locktune.errors import LocktuneError
from locktune.eval.benchmarks import ClassificationSet
from locktune.eval.evaluation import Evaluation, Reporter, SummaryValue, mean, on_benchmark, pct, register_reporter
from locktune.eval.reference import supervised_head, supervised_top1
from locktune.eval.run import image_features
from locktune.eval.zero_shot import (class_embeddings, classes_with_images, per_image_outcomes, relabel,
                                     zero_shot_metrics)

KIND = "classification"
NEAR_OOD = "near_ood/"  # task keys of benchmarks near the training data but outside it (e.g. other emoji art)


@on_benchmark("zero_shot")
@torch.no_grad()
def zero_shot_evaluation(model, benchmark: ClassificationSet, workers: int = 1) -> Evaluation:
    features, valid = image_features(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    return zero_shot_of_features(model, benchmark, features, valid)


@torch.no_grad()
def zero_shot_of_features(model, benchmark: ClassificationSet, features: torch.Tensor,
                          valid: torch.Tensor) -> Evaluation:
    """The zero-shot scores of the images where `valid` is true, from their image-tower features (all of the
    benchmark's rows): the evaluator's own path, which `probe_share` also takes on its held-out half."""
    image_emb = model.embed_image_features(features).cpu()[valid]
    labels = torch.tensor(benchmark.labels, dtype=torch.long)[valid]
    # Only classes with a readable image are answers (chance, top-k and recall all over the same classes).
    kept, dropped = classes_with_images(labels, benchmark.class_names)
    if not kept:
        raise LocktuneError(f"benchmark '{benchmark.name}': none of its {len(benchmark.labels)} images could be "
                            "read; see the counts above for why")
    if dropped:
        print(f"locktune: {benchmark.name}: {len(dropped)} of {len(benchmark.class_names)} classes have no "
              f"readable image and are left out of the scores: {', '.join(dropped)}", file=sys.stderr)
    names = [benchmark.class_names[c] for c in kept]
    scored = relabel(labels, kept, len(benchmark.class_names))
    classes = class_embeddings(model, names, benchmark.templates)
    metrics = zero_shot_metrics(image_emb, scored, classes)
    head = supervised_head(model) if benchmark.imagenet_indices else None
    if head is not None:
        metrics["supervised_top1"] = supervised_top1(head, features[valid], scored,
                                                     [benchmark.imagenet_indices[c] for c in kept])
    metrics["images"] = int(valid.sum())
    metrics["classes"] = len(kept)
    metrics["dropped_classes"] = dropped  # names, in class order; [] when every class was scored
    logits = image_emb @ classes.T
    metrics["per_image"] = per_image_outcomes(logits, scored)
    return Evaluation(KIND, metrics, {"logits": logits, "labels": scored, "class_names": names})


def _classes(m: dict) -> str:
    """The classes scored, and how many were left out for want of a readable image (older results: from chance)."""
    dropped = m.get("dropped_classes") or []
    scored = m.get("classes", round(1 / m["chance_top1"]))
    return f"{scored} ({len(dropped)} without images left out: {', '.join(dropped)})" if dropped else str(scored)


def markdown(results: dict[str, dict]) -> list[str]:
    """The model's numbers beside chance and the image tower's own supervised classifier."""
    lines = ["| zero-shot classification | images | classes | top-1 | top-5 | mean per-class recall "
             "| chance top-1 | tower's supervised classifier top-1 |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {m['images']} | {_classes(m)} | {pct(m, 'top1')} | {pct(m, 'top5')} | "
              f"{pct(m, 'mean_per_class_recall')} | {pct(m, 'chance_top1')} | {pct(m, 'supervised_top1')} |"
              for n, m in results.items()]
    return lines + [""]


def plots(name: str, evaluation: Evaluation, folder: Path) -> list[Path]:
    from locktune.eval.plots import confusion_plot, per_class_plot

    return [per_class_plot(name, evaluation.details, folder), confusion_plot(name, evaluation.details, folder)]


def mean_recall(results: dict[str, dict], near_ood: bool) -> float | None:
    """Mean of mean_per_class_recall over the tasks whose key starts with "near_ood/" (near_ood=True) or
    over every other classification task (near_ood=False)."""
    return mean([m["mean_per_class_recall"] for task, m in results.items()
                 if "mean_per_class_recall" in m and task.startswith(NEAR_OOD) == near_ood])


def recognise(m: dict) -> bool:
    return "top1" in m and not {"train_loss", "languages", "1shot_top1", "seeds"} & set(m)


register_reporter(Reporter(
    KIND, headline=("top1", "top5", "mean_per_class_recall", "chance_top1"), markdown=markdown, recognise=recognise,
    plots=plots,
    summaries=(SummaryValue("mean_zero_shot_top1", "zero-shot top-1 (mean)",
                            lambda results: mean([m["top1"] for m in results.values() if "mean_per_class_recall" in m])),
               SummaryValue("mean_zero_shot_chance", "zero-shot chance top-1 (mean)",
                            lambda results: mean([m["chance_top1"] for m in results.values()
                                                  if "mean_per_class_recall" in m]), column=False),
               # The primary metric of the studies (design 2, docs/studies/towers-v2.md).
               SummaryValue("mean_zero_shot_recall", "zero-shot mean per-class recall (mean)",
                            lambda results: mean_recall(results, near_ood=False)),
               SummaryValue("near_ood_zero_shot_recall", "near-OOD zero-shot mean per-class recall (mean)",
                            lambda results: mean_recall(results, near_ood=True))),
    task_columns=("top1",), chance="chance_top1"))
