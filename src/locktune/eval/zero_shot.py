"""Zero-shot classification: class names x prompt templates -> one text embedding per class."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from locktune.eval.metrics import mean_per_class_recall, topk_accuracy


@torch.no_grad()
def class_embeddings(model, class_names: list[str], templates: list[str], batch_size: int = 256) -> torch.Tensor:
    """Prompt ensemble: each class's template embeddings averaged, then renormalised.  [classes, dim]"""
    texts = [t.format(name) for name in class_names for t in templates]
    embeddings = encode_texts(model, texts, batch_size).view(len(class_names), len(templates), -1)
    return F.normalize(embeddings.mean(dim=1), dim=-1)


@torch.no_grad()
def encode_texts(model, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings [len(texts), dim] on the CPU (computed on the model's device), in batches,
    in the order given.

    Texts are batched in order of length so a batch pads to similar lengths (2-3x faster on mixed-length
    captions, e.g. many languages at once); the rows are put back in the caller's order.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = model.tokenize([texts[j] for j in order[i:i + batch_size]])
        out.append(model.encode_text(tokens["ids"], tokens["mask"]).cpu())  # metrics are computed on the host
    if not out:
        return torch.empty(0, 0)
    embeddings = torch.cat(out)
    return embeddings[torch.argsort(torch.tensor(order))]


def zero_shot_metrics(image_emb: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> dict[str, float]:
    """Top-1, top-5 (top-n for n < 5 classes) and mean per-class recall of cosine-similarity logits, beside
    two baselines: 1/classes (`chance_top1`) and always answering the most frequent class (`majority_top1`),
    which is the honest floor on an imbalanced set (~26% on the Tux Paint categories, not 1/16).

    Ranks only: the same for a softmax- or a sigmoid-trained model (both scores rise with the cosine); what
    the scores themselves mean is `locktune.loss.label_probabilities`'s business."""
    logits = image_emb @ classes.T
    n = classes.shape[0]
    majority = float(torch.bincount(labels).max()) / len(labels) if len(labels) else 0.0
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, min(5, n)),
            "mean_per_class_recall": mean_per_class_recall(logits, labels), "chance_top1": 1.0 / n,
            "majority_top1": majority}


def classes_with_images(labels: torch.Tensor, class_names: list[str]) -> tuple[list[int], list[str]]:
    """(indices of the classes with at least one image among `labels`, names of those with none).

    A class whose images were all unreadable cannot be scored: left among the answers it would still make
    chance 1/classes while mean per-class recall averages over fewer classes.  The scores use the
    classes that remain, and the others are named in the result."""
    present = set(labels.tolist())
    kept = [c for c in range(len(class_names)) if c in present]
    return kept, [class_names[c] for c in range(len(class_names)) if c not in present]


def relabel(labels: torch.Tensor, kept: list[int], n_classes: int) -> torch.Tensor:
    """Labels as indices into `kept` (every label must be in it)."""
    position = torch.full((n_classes,), -1, dtype=torch.long)
    position[torch.tensor(kept, dtype=torch.long)] = torch.arange(len(kept))
    return position[labels.long()]


def per_image_outcomes(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Each evaluated image's top-1 outcome, in benchmark order (unreadable images left out, the same for
    every model): {"correct": "0110..." ('1' = the argmax class is the label), "labels": [int, ...]}, what
    the per-image bootstrap reads.  The argmax is the one `mean_per_class_recall` scores, so that metric is
    recomputable from these two fields exactly (`top1` counts exact ties pessimistically, so it can differ
    when an image's scores tie)."""
    right = (logits.argmax(dim=1) == labels).tolist() if len(labels) else []
    return {"correct": "".join("1" if r else "0" for r in right), "labels": [int(x) for x in labels.tolist()]}
