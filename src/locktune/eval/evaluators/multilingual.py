"""Multilingual retrieval: recall@k both ways per language, over one image set captioned in many languages."""

from __future__ import annotations

import torch

from locktune.eval.benchmarks import MultilingualRetrievalSet
from locktune.eval.evaluation import Evaluation, Reporter, SummaryValue, mean, on_benchmark, register_reporter
from locktune.eval.evaluators.retrieval import recall_header, recall_row
from locktune.eval.multilingual import multilingual_metrics
from locktune.eval.run import image_embeddings

KIND = "multilingual"


@on_benchmark("multilingual")
@torch.no_grad()
def multilingual_evaluation(model, benchmark: MultilingualRetrievalSet, workers: int = 1) -> Evaluation:
    image_emb, valid = image_embeddings(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    metrics = multilingual_metrics(model, image_emb, valid, benchmark.captions)
    metrics["images"] = int(valid.sum())
    return Evaluation(KIND, metrics)



def languages(metrics: dict) -> list[str]:
    return sorted({k.split(":")[0] for k in metrics if ":" in k} - {"mean"})


def markdown(results: dict[str, dict]) -> list[str]:
    lines = recall_header("multilingual retrieval (%)")
    for n, m in results.items():
        lines.append(recall_row(f"{n}, mean of {m['languages']} languages", m["images"], m, "mean:"))
        lines += [recall_row(f"{n} [{lang}]", int(m.get(f"{lang}:images", 0)), m, f"{lang}:") for lang in languages(m)]
    return lines + [""]


def _language_r1(results: dict[str, dict], english: bool) -> float | None:
    """Mean R@1 (both directions) for English, or averaged over every other language, of the first result."""
    for metrics in results.values():
        chosen = [lang for lang in languages(metrics) if (lang == "en") == english]
        return mean([(metrics[f"{lang}:image_to_text_R@1"] + metrics[f"{lang}:text_to_image_R@1"]) / 2
                     for lang in chosen])
    return None


register_reporter(Reporter(
    KIND, headline=("mean:image_to_text_R@1", "mean:image_to_text_R@5", "mean:text_to_image_R@1",
                    "mean:text_to_image_R@5", "mean:chance_R@1"),
    markdown=markdown, recognise=lambda m: "languages" in m,
    summaries=(SummaryValue("multilingual_en_R@1", "English R@1", lambda results: _language_r1(results, True)),
               SummaryValue("multilingual_other_R@1", "other languages R@1",
                            lambda results: _language_r1(results, False))),
    task_columns=("mean:image_to_text_R@1", "mean:text_to_image_R@1"), chance="mean:chance_R@1"))
