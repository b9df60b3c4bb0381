"""Image <-> text retrieval: recall@k both ways over a set of images with their captions."""

from __future__ import annotations

from pathlib import Path

import torch

from locktune.eval.benchmarks import RetrievalSet
from locktune.eval.evaluation import Evaluation, Reporter, SummaryValue, mean, on_benchmark, pct, register_reporter
from locktune.eval.retrieval import retrieval_metrics
from locktune.eval.run import image_embeddings

KIND = "retrieval"
DIRECTIONS = ("image_to_text", "text_to_image")


@on_benchmark("retrieval")
@torch.no_grad()
def retrieval_evaluation(model, benchmark: RetrievalSet, workers: int = 1) -> Evaluation:
    image_emb, valid = image_embeddings(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    metrics, details = retrieval_metrics(model, image_emb, valid, benchmark.captions)
    return Evaluation(KIND, metrics, {"images": benchmark.images, **details})



def recall_row(label: str, images, m: dict, prefix: str = "") -> str:
    return (f"| {label} | {images} | " + " | ".join(pct(m, f"{prefix}{d}_R@{k}") for d in DIRECTIONS for k in (1, 5, 10))
            + f" | {pct(m, f'{prefix}chance_R@1')} |")


def recall_header(title: str) -> list[str]:
    return [f"| {title} | images | I->T R@1 | I->T R@5 | I->T R@10 | T->I R@1 | T->I R@5 | T->I R@10 | chance R@1 |",
            "|---|---|---|---|---|---|---|---|---|"]


def markdown(results: dict[str, dict]) -> list[str]:
    return recall_header("retrieval (%)") + [recall_row(n, m["images"], m) for n, m in results.items()] + [""]


def plots(name: str, evaluation: Evaluation, folder: Path) -> list[Path]:
    from locktune.eval.plots import retrieval_grid

    return [retrieval_grid(name, evaluation.details, folder)]


register_reporter(Reporter(
    KIND, headline=("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5", "chance_R@1"),
    markdown=markdown, recognise=lambda m: "image_to_text_R@1" in m and "languages" not in m, plots=plots,
    summaries=(SummaryValue("mean_retrieval_R@1", "retrieval R@1 (mean I→T, T→I)",
                            lambda results: mean([m[f"{d}_R@1"] for m in results.values() for d in DIRECTIONS
                                                  if "image_to_text_R@1" in m])),),
    task_columns=("image_to_text_R@1", "text_to_image_R@1"), chance="chance_R@1"))
