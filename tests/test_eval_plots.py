"""Plots people can read: the top-confusions summary counts what a hand count says, titles stay inside the
figure, and transparent images are drawn on white (as the model sees them), not black."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from locktune.data.images import ImageSet
from locktune.eval import plots


def one_hot_logits(predicted: list[int], classes: int) -> torch.Tensor:
    logits = torch.zeros(len(predicted), classes)
    logits[torch.arange(len(predicted)), torch.tensor(predicted)] = 1.0
    return logits


def test_top_confusions_match_a_hand_count():
    names = ["cat", "dog", "car"]
    labels = [0, 0, 0, 0, 1, 1, 1, 2, 2]
    predicted = [0, 1, 1, 2, 1, 0, 1, 2, 2]  # cat->dog twice, cat->car once, dog->cat once
    counts = torch.zeros(3, 3)
    for t, p in zip(labels, predicted):
        counts[t, p] += 1
    assert plots.top_confusions(names, counts) == [("cat", "dog", 2, 0.5), ("cat", "car", 1, 0.25),
                                                   ("dog", "cat", 1, 1 / 3)]


def _text_boxes_inside(path, figure_texts) -> bool:
    return all(0 <= b.x0 and 0 <= b.y0 and b.x1 <= path[0] and b.y1 <= path[1] for b in figure_texts)


def test_many_classes_from_few_images_get_a_summary_and_titles_are_not_clipped(tmp_path, monkeypatch):
    names = [f"class number {i}" for i in range(100)]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, 20).tolist()
    details = {"class_names": names, "labels": torch.tensor(labels),
               "logits": one_hot_logits(rng.integers(0, 100, 20).tolist(), 100)}
    seen = []
    original_savefig = plots.plt.Figure.savefig

    def record(fig, path, **kwargs):  # check the title's box lies inside the figure once laid out
        original_savefig(fig, path, **kwargs)
        renderer = fig.canvas.get_renderer()
        width, height = fig.get_size_inches() * fig.dpi
        boxes = [t.get_window_extent(renderer) for t in fig.texts + [ax.title for ax in fig.axes]
                 if t.get_text()]
        seen.append((path, _text_boxes_inside((width, height), boxes)))

    monkeypatch.setattr(plots.plt.Figure, "savefig", record)
    path = plots.confusion_plot("hundred", details, tmp_path)
    small = {"class_names": names[:5], "labels": torch.tensor([0, 1, 2, 3, 4] * 4),
             "logits": one_hot_logits([0, 1, 2, 4, 3] * 4, 5)}
    plots.confusion_plot("five", small, tmp_path)
    plots.per_class_plot("five", small, tmp_path)
    assert path.is_file() and Image.open(path).size[0] < 1200  # the summary, not a 100 x 100 matrix
    assert all(inside for _, inside in seen), seen


class TransparentImages(ImageSet):
    def __init__(self):
        self.keys = ["clear"]

    def load(self, index: int) -> Image.Image:
        image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # fully transparent: white as the model sees it
        image.paste((200, 0, 0, 255), (15, 15, 25, 25))
        return image


def test_retrieval_grid_draws_transparency_on_white(tmp_path):
    details = {"similarity": torch.ones(1, 1), "owner": torch.tensor([0]), "rows": [0], "texts": ["a red dot"],
               "images": TransparentImages()}
    path = plots.retrieval_grid("clear", details, tmp_path, queries=1, top=1)
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    black = (pixels.sum(1) < 60).mean()
    assert black < 0.02, f"{black:.1%} of the grid is black"
