"""Metrics on similarity matrices: top-k accuracy and retrieval recall@k.

Ties are broken pessimistically: a right answer tied with a wrong one counts as ranked below it, so a
constant model never scores above chance.
"""

from __future__ import annotations

import torch


def rank_of_best_positive(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """0-based rank of the best-scoring positive in each row: the number of negatives scoring >= it.

    scores: [Q, C]; positive: [Q, C] bool with at least one True per row.
    """
    best_positive = scores.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
    return ((scores >= best_positive) & ~positive).sum(dim=1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    positive = torch.zeros_like(logits, dtype=torch.bool)
    positive[torch.arange(len(labels)), labels] = True
    return float((rank_of_best_positive(logits, positive) < k).double().mean())


def mean_per_class_recall(logits: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = logits.argmax(dim=1)
    recalls = [float((predictions[labels == c] == c).double().mean()) for c in labels.unique()]
    return sum(recalls) / len(recalls)


def retrieval_recalls(similarity: torch.Tensor, caption_owner: torch.Tensor,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """similarity: [images, captions]; caption_owner[j] = index of the image caption j describes.

    image->text: an image query is right at k if any of its captions is in the top k.
    text->image: a caption query is right at k if its image is in the top k.
    """
    n_images = similarity.shape[0]
    owns = caption_owner.unsqueeze(0) == torch.arange(n_images).unsqueeze(1)  # [images, captions]
    image_ranks = rank_of_best_positive(similarity, owns)
    text_ranks = rank_of_best_positive(similarity.T, owns.T)
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((image_ranks < k).double().mean())
        out[f"text_to_image_R@{k}"] = float((text_ranks < k).double().mean())
    return out


def per_class_recall(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> list[float | None]:
    """Top-1 recall of each class (None for a class with no images here)."""
    predictions = logits.argmax(dim=1)
    return [float((predictions[labels == c] == c).double().mean()) if bool((labels == c).any()) else None
            for c in range(n_classes)]


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[true class, predicted class] counts."""
    counts = torch.zeros(n_classes, n_classes, dtype=torch.long)
    counts.index_put_((labels.long(), logits.argmax(dim=1)), torch.ones(len(labels), dtype=torch.long),
                      accumulate=True)
    return counts
