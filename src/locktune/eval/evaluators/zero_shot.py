"""Zero-shot classification: each image against one prompt-ensemble embedding per class name."""

from __future__ import annotations

from pathlib import Path

import torch

from locktune.eval.benchmarks import ClassificationSet
from locktune.eval.evaluation import Evaluation, Reporter, SummaryValue, mean, on_benchmark, pct, register_reporter
from locktune.eval.reference import supervised_head, supervised_top1
from locktune.eval.run import image_features
from locktune.eval.zero_shot import class_embeddings, zero_shot_metrics

KIND = "classification"


@on_benchmark("zero_shot")
@torch.no_grad()
def zero_shot_evaluation(model, benchmark: ClassificationSet, workers: int = 1) -> Evaluation:
    features, valid = image_features(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    image_emb = model.embed_image_features(features)[valid]
    labels = torch.tensor(benchmark.labels)[valid]
    classes = class_embeddings(model, benchmark.class_names, benchmark.templates)
    metrics = zero_shot_metrics(image_emb, labels, classes)
    head = supervised_head(model) if benchmark.imagenet_indices else None
    if head is not None:
        metrics["supervised_top1"] = supervised_top1(head, features[valid], labels, benchmark.imagenet_indices)
    metrics["images"] = int(valid.sum())
    return Evaluation(KIND, metrics, {"logits": image_emb @ classes.T, "labels": labels,
                                      "class_names": benchmark.class_names})



def markdown(results: dict[str, dict]) -> list[str]:
    """The model's numbers beside chance and the image tower's own supervised classifier."""
    lines = ["| zero-shot classification | images | classes | top-1 | top-5 | mean per-class recall "
             "| chance top-1 | tower's supervised classifier top-1 |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {m['images']} | {round(1 / m['chance_top1'])} | {pct(m, 'top1')} | {pct(m, 'top5')} | "
              f"{pct(m, 'mean_per_class_recall')} | {pct(m, 'chance_top1')} | {pct(m, 'supervised_top1')} |"
              for n, m in results.items()]
    return lines + [""]


def plots(name: str, evaluation: Evaluation, folder: Path) -> list[Path]:
    from locktune.eval.plots import confusion_plot, per_class_plot

    return [per_class_plot(name, evaluation.details, folder), confusion_plot(name, evaluation.details, folder)]


def recognise(m: dict) -> bool:
    return "top1" in m and not {"train_loss", "languages", "1shot_top1", "seeds"} & set(m)


register_reporter(Reporter(
    KIND, headline=("top1", "top5", "mean_per_class_recall", "chance_top1"), markdown=markdown, recognise=recognise,
    plots=plots,
    summaries=(SummaryValue("mean_zero_shot_top1", "zero-shot top-1 (mean)",
                            lambda results: mean([m["top1"] for m in results.values() if "mean_per_class_recall" in m])),
               SummaryValue("mean_zero_shot_chance", "zero-shot chance top-1 (mean)",
                            lambda results: mean([m["chance_top1"] for m in results.values()
                                                  if "mean_per_class_recall" in m]), column=False)),
    task_columns=("top1",), chance="chance_top1"))
