"""Few-shot linear probes on the image tower's pooled features (the representation LiT keeps or degrades)."""

from __future__ import annotations

import torch

from locktune.eval.benchmarks import ClassificationSet
from locktune.eval.evaluation import Evaluation, Reporter, SummaryValue, mean, on_benchmark, pct, register_reporter
from locktune.eval.fewshot import fewshot_metrics
from locktune.eval.run import image_features

KIND = "fewshot"
SHOTS = (1, 5, 10, 25)
DEFAULT_DRAWS = 3  # what every suite used before tasks could ask for more (fewshot_metrics' seeds 0, 1, 2)


@on_benchmark("fewshot", options=("draws",))
def fewshot_evaluation(model, benchmark: ClassificationSet, workers: int = 1, draws: int = 0) -> Evaluation:
    """`draws` random draws of the k shots per class (seeds 0..draws-1; 0 = DEFAULT_DRAWS): each shot
    count's mean and (population) standard deviation over the draws; `seeds` records how many."""
    features, valid = image_features(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    if features.ndim == 3:  # a blocks:N head's side is the tower's tokens: the probe reads their mean
        features = features.mean(1)  # (for a CNN's tokens, exactly the tower's own pooled output)
    labels = torch.tensor(benchmark.labels)[valid]
    metrics = fewshot_metrics(features[valid].numpy(), labels.numpy(), seeds=tuple(range(draws or DEFAULT_DRAWS)))
    metrics["images"] = int(valid.sum())
    return Evaluation(KIND, metrics)



def markdown(results: dict[str, dict]) -> list[str]:
    lines = ["| few-shot linear probe, image tower features (top-1 %, mean ± std over seeds) | 1-shot | 5-shot "
             "| 10-shot | 25-shot | chance |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | " + " | ".join(pct(m, f"{k}shot_top1", f"{k}shot_top1_std") for k in SHOTS)
              + f" | {pct(m, 'chance_top1')} |" for n, m in results.items()]
    return lines + [""]


register_reporter(Reporter(
    KIND, headline=("1shot_top1", "5shot_top1", "10shot_top1", "25shot_top1", "chance_top1"), markdown=markdown,
    recognise=lambda m: "1shot_top1" in m or "seeds" in m,
    summaries=(SummaryValue("mean_fewshot_10shot_top1", "10-shot probe top-1 (mean)",
                            lambda results: mean([m["10shot_top1"] for m in results.values() if "10shot_top1" in m])),),
    task_columns=("10shot_top1",), chance="chance_top1"))
