"""Plots for ablation reports: one metric per arm (bars with seed error bars, each seed a dot) and the
training-loss curves (mean over seeds per arm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from locktune.ablate.records import arms_in_order, metric


def _pyplot():
    from locktune.extras import require_extra

    require_extra("plots", "the ablation plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_bars(records: list[dict], key: str, title: str, path: Path) -> Path:
    plt = _pyplot()
    arms = arms_in_order(records)
    values = [[v for r in records if r["arm"] == a and (v := metric(r, key)) is not None] for a in arms]
    means = [100 * np.mean(v) if v else 0.0 for v in values]
    stds = [100 * np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(arms) + 1.5), 3.2))
    ax.bar(range(len(arms)), means, yerr=stds, color="#7aa6d6", capsize=3)
    for i, v in enumerate(values):
        ax.scatter([i] * len(v), [100 * x for x in v], color="#1f3b5c", s=10, zorder=3)
    ax.set_xticks(range(len(arms)), arms, rotation=30 if len(arms) > 6 else 0)
    ax.set_ylabel(f"{title} (%)")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_curves(records: list[dict], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for arm in arms_in_order(records):
        curves = [r["train"]["curve"] for r in records if r["arm"] == arm and r["train"].get("curve")]
        if not curves:
            continue
        steps = [s for s, _ in curves[0]]
        length = min(len(c) for c in curves)
        mean = np.mean([[loss for _, loss in c[:length]] for c in curves], axis=0)
        ax.plot(steps[:length], mean, label=arm, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
