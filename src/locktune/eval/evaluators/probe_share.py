"""The share of what the image features know that zero-shot reaches: zero-shot top-1 over a logistic probe's
top-1, both on the same held-out half of a labelled benchmark (issue 27: "today's demo model reaches about a
fifth of its probe on Fashion-MNIST").

The probe reads the image tower's pooled features as the model's image side holds them: a locked tower's
from the embedding cache (so every arm with that tower has the same probe, fitted once: eval/probe_share.py),
a trained tower's as they are after training.  A blocks:N head's side is the tower's tokens: the probe reads
their mean (for a CNN's tokens exactly the tower's own pooled output, as the few-shot probe does).  Zero-shot
runs the zero-shot evaluator's own path (prompt ensembles) on the held-out images only."""

from __future__ import annotations

import numpy as np
import torch

from locktune.errors import LocktuneError
from locktune.eval.benchmarks import ClassificationSet
from locktune.eval.evaluation import Evaluation, Reporter, SummaryValue, mean, on_benchmark, pct, register_reporter
from locktune.eval.evaluators.zero_shot import zero_shot_of_features
from locktune.eval.probe_share import accuracy_and_recall, held_out_mask, probe_predictions
from locktune.eval.run import image_features

KIND = "probe_share"


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


@on_benchmark("probe_share")
@torch.no_grad()
def probe_share_evaluation(model, benchmark: ClassificationSet, workers: int = 1) -> Evaluation:
    features, valid = image_features(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    held_out = torch.from_numpy(held_out_mask(benchmark.images.keys))
    train_rows, test_rows = valid & ~held_out, valid & held_out
    if not bool(train_rows.any()) or not bool(test_rows.any()):
        raise LocktuneError(f"benchmark '{benchmark.name}': probe_share needs readable images in both halves "
                            f"(probe training {int(train_rows.sum())}, held out {int(test_rows.sum())}); "
                            "evaluate more images (max_images)")
    zero_shot = zero_shot_of_features(model, benchmark, features, test_rows).metrics
    pooled = features.float().mean(1) if features.ndim == 3 else features.float()
    x, labels = pooled.cpu().numpy(), np.asarray(benchmark.labels, dtype=np.int64)
    train, test = train_rows.numpy(), test_rows.numpy()
    probe = probe_predictions(x[train], labels[train], x[test])
    probe_top1, probe_recall = accuracy_and_recall(probe.predictions, labels[test])
    metrics = {"probe_top1": probe_top1, "probe_mean_per_class_recall": probe_recall,
               "zero_shot_top1": zero_shot["top1"], "zero_shot_mean_per_class_recall": zero_shot["mean_per_class_recall"],
               "share": _ratio(zero_shot["top1"], probe_top1),
               "recall_share": _ratio(zero_shot["mean_per_class_recall"], probe_recall),
               "chance_top1": zero_shot["chance_top1"], "probe_c": probe.c,
               "probe_train_images": int(train.sum()), "held_out_images": int(test.sum()),
               "classes": zero_shot["classes"]}
    return Evaluation(KIND, {k: v for k, v in metrics.items() if v is not None})


def markdown(results: dict[str, dict]) -> list[str]:
    lines = ["| zero-shot vs a logistic probe on the image features (held-out half) | probe-train images "
             "| held-out images | probe top-1 | zero-shot top-1 | share (zero-shot / probe) | probe mean per-class "
             "recall | zero-shot mean per-class recall |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {m['probe_train_images']} | {m['held_out_images']} | {pct(m, 'probe_top1')} | "
              f"{pct(m, 'zero_shot_top1')} | {pct(m, 'share')} | {pct(m, 'probe_mean_per_class_recall')} | "
              f"{pct(m, 'zero_shot_mean_per_class_recall')} |" for n, m in results.items()]
    return lines + [""]


register_reporter(Reporter(
    KIND, headline=("probe_top1", "zero_shot_top1", "share"), markdown=markdown,
    recognise=lambda m: "share" in m and "probe_top1" in m,
    summaries=(SummaryValue("mean_probe_share", "zero-shot / probe top-1 (mean share)",
                            lambda results: mean([m["share"] for m in results.values() if "share" in m])),),
    task_columns=("probe_top1", "zero_shot_top1", "share")))
