"""Evaluate a model on named benchmarks -> {benchmark: {metric: value}}.

With a locked image tower the image side comes from the embedding cache (shared with training and
with other runs), so evaluating a new text tower costs only text forward passes.
"""

from __future__ import annotations

import torch

from locktune.cache.embedding_cache import cached_features, compute_features
from locktune.eval.benchmarks import ClassificationSet, RetrievalSet, get_benchmark
from locktune.eval.metrics import retrieval_recalls
from locktune.eval.zero_shot import class_embeddings, encode_texts, zero_shot_metrics
from locktune.towers.setting import unwrap


def image_embeddings(model, images, workers: int = 1, desc: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised embeddings [N, dim], valid mask [N])."""
    tower = unwrap(model.image_tower)
    if model.setting.image_locked:
        result = cached_features(tower, model.preprocess, images, workers=workers, desc=desc)
        features, valid = result.features, result.valid
    else:
        features, _ = compute_features(tower, model.preprocess, images, workers=workers, desc=desc)
        valid = ~torch.isnan(features).any(1)
    with torch.no_grad():
        return model.embed_image_features(torch.nan_to_num(features)), valid


@torch.no_grad()
def evaluate_benchmark(model, benchmark, workers: int = 1) -> dict[str, float]:
    model.eval()
    image_emb, valid = image_embeddings(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    if isinstance(benchmark, ClassificationSet):
        classes = class_embeddings(model, benchmark.class_names, benchmark.templates)
        labels = torch.tensor(benchmark.labels)
        metrics = zero_shot_metrics(image_emb[valid], labels[valid], classes)
    elif isinstance(benchmark, RetrievalSet):
        keep = [i for i in range(len(benchmark.captions)) if bool(valid[i])]
        captions = [c for i in keep for c in benchmark.captions[i]]
        owner = torch.tensor([row for row, i in enumerate(keep) for _ in benchmark.captions[i]])
        similarity = image_emb[keep] @ encode_texts(model, captions).T
        metrics = retrieval_recalls(similarity, owner)
        metrics["chance_R@1"] = 1.0 / len(keep)
    else:
        raise TypeError(f"unknown benchmark kind {type(benchmark).__name__}")
    metrics["images"] = int(valid.sum())
    return metrics


def evaluate(model, names: list[str], max_images: int = 0, workers: int = 1) -> dict[str, dict[str, float]]:
    return {name: evaluate_benchmark(model, get_benchmark(name, max_images), workers) for name in names}
