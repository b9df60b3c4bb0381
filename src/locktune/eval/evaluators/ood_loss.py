"""The contrastive loss on training pairs vs held-out pairs: how far the model generalises beyond its data."""

from __future__ import annotations

import torch

from locktune.data.images import SubsetImages
from locktune.data.pairs import load_pairs, take_evenly
from locktune.eval.benchmarks import get_benchmark
from locktune.eval.evaluation import EVALUATORS, Evaluation, Reporter, SummaryValue, register_reporter
from locktune.eval.ood_loss import loss_name, ood_loss_metrics, pairs_loss
from locktune.eval.run import image_embeddings
from locktune.eval.run_pairs import split_run_pairs, splits_pairs

KIND = "ood_loss"
DEFAULT_TRAIN_SOURCES = ("openclipart", "emoji")


def _sampled(images, rows: list[int]):
    """The sampled images; the set itself when every image is sampled (so it shares cache entries)."""
    return images if rows == list(range(len(images))) else SubsetImages(images, rows)


def training_pairs(train_sources, data):
    """The pairs the run trained on: its training split when it held pairs out or trained on a subset
    (`data`, the run's DataConfig), else every pair of its sources."""
    if data is not None and splits_pairs(data):
        return split_run_pairs(data)[0], "+".join(data.sources) + " (training split)"
    return load_pairs(list(train_sources), 0), "+".join(train_sources)


@EVALUATORS.register("ood_loss")
def evaluate(model, benchmark_name: str, max_images: int, workers: int, train_sources=DEFAULT_TRAIN_SOURCES,
             batch_size: int = 64, data=None, **_) -> Evaluation:
    with torch.no_grad():
        train, train_name = training_pairs(train_sources, data)
        # Only the sampled training pairs are embedded: a trained image tower cannot use the cache, and
        # running it over every training image would cost more than the training run did.
        sample = take_evenly(len(train), max_images)
        train_images = _sampled(train.images, sample)
        train_emb, train_valid = image_embeddings(model, train_images, workers, desc=f"embedding {train.name}")
        held = get_benchmark(benchmark_name, 0)
        held_sample = take_evenly(len(held.images), max_images)
        held_images = _sampled(held.images, held_sample)
        held_emb, held_valid = image_embeddings(model, held_images, workers, desc=f"embedding {held.name}")
        train_loss = pairs_loss(model, train_emb, train_valid, [train.captions[i] for i in sample], max_images,
                                batch_size)
        held_loss = pairs_loss(model, held_emb, held_valid, [held.captions[i] for i in held_sample], max_images,
                               batch_size)
    metrics = ood_loss_metrics(train_loss, held_loss, batch_size, loss_name(model))
    metrics["train_pairs"] = train_name
    metrics["heldout_pairs"] = benchmark_name
    metrics["dataset_fingerprint"] = f"{train_images.fingerprint()}+{held_images.fingerprint()}"
    return Evaluation(KIND, metrics)


def markdown(results: dict[str, dict]) -> list[str]:
    lines = []
    for n, m in results.items():
        kind = {"sigmoid": "sigmoid loss"}.get(m.get("loss_name", "softmax"), "softmax contrastive loss")
        lines += ["| the model's own %s (batch of %d) | training pairs (%s) | held-out pairs (%s) | chance |"
                  % (kind, m["batch_size"], m.get("train_pairs", "?"), m.get("heldout_pairs", "?")),
                  "|---|---|---|---|",
                  f"| {n} | {m['train_loss']:.3f} | {m['heldout_loss']:.3f} | {m['chance_loss']:.3f} |", ""]
    return lines


def _first(results: dict[str, dict], key: str) -> float | None:
    return next((float(m[key]) for m in results.values() if key in m), None)


register_reporter(Reporter(
    KIND, headline=("train_loss", "heldout_loss", "chance_loss"), markdown=markdown,
    recognise=lambda m: "train_loss" in m,
    summaries=(SummaryValue("ood_loss|train_loss", "loss, training pairs", lambda r: _first(r, "train_loss")),
               SummaryValue("ood_loss|heldout_loss", "loss, held-out pairs", lambda r: _first(r, "heldout_loss")))))
