"""Plots of an evaluation: per-class accuracy, confusion matrix (or, where a matrix would be unreadable,
the most frequent confusions), retrieval examples as an image grid (transparency on white, as the model
sees it).  Figures use matplotlib's constrained layout, so titles and colour bars never overlap."""

from __future__ import annotations

from pathlib import Path

from locktune.extras import require_extra

require_extra("plots", "evaluation plots", "or give eval.plots=false")
import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from locktune.eval.metrics import confusion_matrix, per_class_recall  # noqa: E402
from locktune.data.decode import on_background  # noqa: E402

# A matrix is drawn up to this many classes and only with enough images to fill it (on average this many
# per class); otherwise the plot lists the most frequent confusions instead.
MATRIX_MAX_CLASSES = 30
MATRIX_MIN_IMAGES_PER_CLASS = 3
TOP_CONFUSIONS = 20


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def per_class_plot(name: str, details: dict, folder: Path) -> Path:
    names = details["class_names"]
    recalls = per_class_recall(details["logits"], details["labels"], len(names))
    shown = [(n, r) for n, r in zip(names, recalls) if r is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(shown)), 4.5), layout="constrained")
    ax.bar(range(len(shown)), [100 * r for _, r in shown])
    ax.set_xticks(range(len(shown)), [n for n, _ in shown], rotation=90, fontsize=7)
    ax.axhline(100 / len(names), color="grey", linestyle="--", label="chance")
    ax.set_ylabel("top-1 recall (%)")
    fig.suptitle(f"{name}: per-class zero-shot accuracy")
    ax.legend()
    path = folder / f"{_safe(name)}_per_class.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_plot(name: str, details: dict, folder: Path) -> Path:
    """The row-normalised confusion matrix, or the top confusions where a matrix would be unreadable."""
    names = details["class_names"]
    counts = confusion_matrix(details["logits"], details["labels"], len(names)).float()
    if len(names) > MATRIX_MAX_CLASSES or counts.sum() < MATRIX_MIN_IMAGES_PER_CLASS * len(names):
        return top_confusions_plot(name, names, counts, folder)
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    side = max(5.0, 0.28 * len(names) + 3)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    image = ax.imshow(rates.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    fig.suptitle(f"{name}: confusion (row-normalised, {int(counts.sum())} images)")
    path = folder / f"{_safe(name)}_confusion.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def top_confusions(names: list[str], counts: torch.Tensor, top: int = TOP_CONFUSIONS) -> list[tuple[str, str, int, float]]:
    """The most frequent (true, predicted, count, share of the true class) mistakes, most frequent first."""
    off = counts.clone()
    off.fill_diagonal_(0)
    per_class = counts.sum(1).clamp(min=1)
    pairs = [(int(off[t, p]), t, p) for t, p in off.nonzero().tolist()]
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    return [(names[t], names[p], n, n / float(per_class[t])) for n, t, p in pairs[:top]]


def top_confusions_plot(name: str, names: list[str], counts: torch.Tensor, folder: Path) -> Path:
    rows = top_confusions(names, counts)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(rows) + 1.5)), layout="constrained")
    if rows:
        labels = [f"{true[:28]} -> {pred[:28]}" for true, pred, _, _ in rows][::-1]
        ax.barh(range(len(rows)), [n for _, _, n, _ in rows][::-1], color="tab:red")
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        for y, (_, _, n, share) in enumerate(rows[::-1]):
            ax.text(n, y, f" {n} ({100 * share:.0f}% of the class)", va="center", fontsize=7)
        ax.set_xlabel("images")
    else:
        ax.text(0.5, 0.5, "no confusions", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(f"{name}: the {len(rows)} most frequent confusions (true -> predicted)\n"
                 f"{len(names)} classes, {int(counts.sum())} images: a full matrix would be unreadable", fontsize=10)
    path = folder / f"{_safe(name)}_confusion.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def retrieval_grid(name: str, details: dict, folder: Path, queries: int = 5, top: int = 5) -> Path:
    """Text queries spread over the set, each with its top images; green frame = the caption's own image."""
    similarity, owner, rows = details["similarity"], details["owner"], details["rows"]
    texts, images = details["texts"], details["images"]
    picks = torch.linspace(0, len(texts) - 1, queries).long().tolist()
    fig, axes = plt.subplots(queries, top, figsize=(2 * top, 2.3 * queries), squeeze=False, layout="constrained")
    for r, j in enumerate(picks):
        ranked = similarity[:, j].argsort(descending=True)[:top].tolist()
        for c, i in enumerate(ranked):
            ax = axes[r][c]
            try:
                ax.imshow(on_background(images.load(rows[i])))  # transparency on white, as the model sees it
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
    path = folder / f"{_safe(name)}_retrieval_examples.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_all(evaluations: dict, folder: Path) -> list[Path]:
    """Every plot the evaluations' kinds draw (`Reporter.plots`), written under `folder`."""
    from locktune.eval.evaluation import REPORTERS, reporters

    reporters()
    folder.mkdir(parents=True, exist_ok=True)
    return [path for name, evaluation in evaluations.items()
            for path in REPORTERS.get(evaluation.kind).plots(name, evaluation, folder)]
