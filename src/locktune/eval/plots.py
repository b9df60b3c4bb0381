"""Plots of an evaluation: per-class accuracy, confusion matrix, retrieval examples as an image grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from locktune.eval.metrics import confusion_matrix, per_class_recall  # noqa: E402

MAX_CONFUSION_CLASSES = 100  # beyond that the matrix is unreadable (ImageNet's 1,000)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def per_class_plot(name: str, details: dict, folder: Path) -> Path:
    names = details["class_names"]
    recalls = per_class_recall(details["logits"], details["labels"], len(names))
    shown = [(n, r) for n, r in zip(names, recalls) if r is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(shown)), 4))
    ax.bar(range(len(shown)), [100 * r for _, r in shown])
    ax.set_xticks(range(len(shown)), [n for n, _ in shown], rotation=90, fontsize=7)
    ax.axhline(100 / len(names), color="grey", linestyle="--", label="chance")
    ax.set_ylabel("top-1 recall (%)")
    ax.set_title(f"{name}: per-class zero-shot accuracy")
    ax.legend()
    fig.tight_layout()
    path = folder / f"{_safe(name)}_per_class.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_plot(name: str, details: dict, folder: Path) -> Path:
    names = details["class_names"]
    counts = confusion_matrix(details["logits"], details["labels"], len(names)).float()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(names) + 2), max(4, 0.25 * len(names) + 1.5)))
    image = ax.imshow(rates.numpy(), cmap="viridis", vmin=0, vmax=1)
    fontsize = 7 if len(names) <= 30 else 4
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(names)), names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{name}: confusion (row-normalised)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    path = folder / f"{_safe(name)}_confusion.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def retrieval_grid(name: str, details: dict, folder: Path, queries: int = 5, top: int = 5) -> Path:
    """Text queries spread over the set, each with its top images; green frame = the caption's own image."""
    similarity, owner, rows = details["similarity"], details["owner"], details["rows"]
    texts, images = details["texts"], details["images"]
    picks = torch.linspace(0, len(texts) - 1, queries).long().tolist()
    fig, axes = plt.subplots(queries, top, figsize=(2 * top, 2.3 * queries), squeeze=False)
    for r, j in enumerate(picks):
        ranked = similarity[:, j].argsort(descending=True)[:top].tolist()
        for c, i in enumerate(ranked):
            ax = axes[r][c]
            try:
                ax.imshow(images.load(rows[i]).convert("RGB"))
            except Exception:  # an unreadable image shows as an empty cell
                pass
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "green" if i == int(owner[j]) else "red"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
        axes[r][0].set_title(texts[j][:60], fontsize=8, loc="left")
    fig.suptitle(f"{name}: text -> image, top {top} (green: the caption's own image)")
    fig.tight_layout()
    path = folder / f"{_safe(name)}_retrieval_examples.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_all(evaluations: dict, folder: Path) -> list[Path]:
    """Every plot the evaluations' details allow, written under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, evaluation in evaluations.items():
        details = evaluation.details
        if details.get("kind") == "classification":
            paths.append(per_class_plot(name, details, folder))
            if len(details["class_names"]) <= MAX_CONFUSION_CLASSES:
                paths.append(confusion_plot(name, details, folder))
        elif details.get("kind") == "retrieval":
            paths.append(retrieval_grid(name, details, folder))
    return paths
