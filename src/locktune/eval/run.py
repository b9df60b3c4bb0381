"""Evaluate a model on named benchmarks -> {benchmark: {metric: value}}.

With a locked image tower the image side comes from the embedding cache (shared with training and
with other runs), so evaluating a new text tower costs only text forward passes.  Each evaluator
returns its metrics and the details a plot needs (logits, similarity matrices).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from locktune.cache.embedding_cache import cached_features, compute_features
from locktune.eval.benchmarks import ClassificationSet, MultilingualRetrievalSet, RetrievalSet, get_benchmark
from locktune.eval.fewshot import fewshot_metrics
from locktune.eval.multilingual import multilingual_metrics
from locktune.eval.reference import supervised_head, supervised_top1
from locktune.eval.retrieval import retrieval_metrics
from locktune.eval.zero_shot import class_embeddings, zero_shot_metrics
from locktune.towers.setting import unwrap


@dataclass
class Evaluation:
    metrics: dict[str, float]
    details: dict = field(default_factory=dict)


_remembered: dict | None = None  # set inside `remembered_features()`


@contextmanager
def remembered_features():
    """Inside this block an unlocked (trained) image tower runs over each image set once, however many
    evaluators read it (zero-shot and few-shot on one benchmark, retrieval and the held-out loss).  Only
    for a block in which the model does not change; a locked tower uses the disk cache instead."""
    global _remembered
    outer, _remembered = _remembered, {}
    try:
        yield
    finally:
        _remembered = outer


def image_features(model, images, workers: int = 1, desc: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The image tower's pooled features [N, D] (zeros where unreadable) and the valid mask [N]."""
    tower = unwrap(model.image_tower)
    if model.setting.image_locked:
        result = cached_features(tower, model.preprocess, images, workers=workers, desc=desc)
        return torch.nan_to_num(result.features), result.valid
    key = (id(model), images.fingerprint(), repr(model.preprocess.describe()))
    if _remembered is not None and key in _remembered:
        return _remembered[key]
    features, _ = compute_features(tower, model.preprocess, images, workers=workers, desc=desc)
    valid = ~torch.isnan(features).any(1)
    out = (torch.nan_to_num(features), valid)
    if _remembered is not None:
        _remembered[key] = out
    return out


def image_embeddings(model, images, workers: int = 1, desc: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised embeddings [N, dim], valid mask [N])."""
    features, valid = image_features(model, images, workers, desc)
    with torch.no_grad():
        return model.embed_image_features(features), valid


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
    return Evaluation(metrics, {"kind": "classification", "logits": image_emb @ classes.T, "labels": labels,
                                "class_names": benchmark.class_names})


@torch.no_grad()
def retrieval_evaluation(model, benchmark: RetrievalSet, workers: int = 1) -> Evaluation:
    image_emb, valid = image_embeddings(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    metrics, details = retrieval_metrics(model, image_emb, valid, benchmark.captions)
    return Evaluation(metrics, {"kind": "retrieval", "images": benchmark.images, **details})


@torch.no_grad()
def multilingual_evaluation(model, benchmark: MultilingualRetrievalSet, workers: int = 1) -> Evaluation:
    image_emb, valid = image_embeddings(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    metrics = multilingual_metrics(model, image_emb, valid, benchmark.captions)
    metrics["images"] = int(valid.sum())
    return Evaluation(metrics, {"kind": "multilingual"})


def fewshot_evaluation(model, benchmark: ClassificationSet, workers: int = 1) -> Evaluation:
    """Few-shot probes on the image tower's pooled features (the representation LiT keeps or degrades)."""
    features, valid = image_features(model, benchmark.images, workers, desc=f"embedding {benchmark.name}")
    labels = torch.tensor(benchmark.labels)[valid]
    metrics = fewshot_metrics(features[valid].numpy(), labels.numpy())
    metrics["images"] = int(valid.sum())
    return Evaluation(metrics, {"kind": "fewshot"})


def evaluate_benchmark(model, benchmark, workers: int = 1) -> dict[str, float]:
    """The default evaluation for the benchmark's kind: zero-shot, retrieval or multilingual retrieval."""
    model.eval()
    if isinstance(benchmark, ClassificationSet):
        return zero_shot_evaluation(model, benchmark, workers).metrics
    if isinstance(benchmark, RetrievalSet):
        return retrieval_evaluation(model, benchmark, workers).metrics
    if isinstance(benchmark, MultilingualRetrievalSet):
        return multilingual_evaluation(model, benchmark, workers).metrics
    raise TypeError(f"unknown benchmark kind {type(benchmark).__name__}")


def evaluate(model, names: list[str], max_images: int = 0, workers: int = 1) -> dict[str, dict[str, float]]:
    return {name: evaluate_benchmark(model, get_benchmark(name, max_images), workers) for name in names}
