"""The public API: load a trained model and use it in three lines.

    import locktune
    model = locktune.load("runs/demo")                 # run folder or saved-model folder
    model.classify("cat.png", ["cat", "dog", "car"])   # -> [("cat", 0.91), ("dog", 0.07), ("car", 0.02)]

Everything returns float32 numpy arrays (embeddings are L2-normalised), so results go straight into
numpy, scikit-learn or a search index without touching torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

ImageLike = Union[str, Path, Image.Image]
DEFAULT_TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "an icon of a {}.", "{}")


def checked_labels(class_names: Sequence[str]) -> list[str]:
    """A list of distinct, non-empty labels: a bare string (which would be read letter by letter), a
    non-string or an empty label is an error; repeated labels are merged, with a note on stderr."""
    from locktune.errors import LocktuneError

    if isinstance(class_names, (str, bytes)):
        raise LocktuneError(f"class names should be a list of labels, e.g. [{class_names!r}, 'dog'], not the single "
                            f"string {class_names!r} (it would be read letter by letter)")
    names = list(class_names)
    if not names:
        raise LocktuneError("give at least one class name")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise LocktuneError(f"class name {i} is {name!r}; every class name must be a non-empty string")
    distinct = list(dict.fromkeys(names))
    if len(distinct) < len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        import sys

        print(f"locktune: note: repeated labels merged: {', '.join(map(repr, repeated))}", file=sys.stderr)
    return distinct


def checked_templates(templates: Sequence[str]) -> list[str]:
    """Prompt templates that each place the class name: one without `{}` would make every class identical."""
    from locktune.errors import LocktuneError

    if isinstance(templates, str):
        templates = [templates]
    out = list(templates) or ["{}"]
    for template in out:
        try:
            placed = isinstance(template, str) and "\x00" in template.format("\x00")
        except (IndexError, KeyError, ValueError):
            placed = False
        if not placed:
            raise LocktuneError(f"prompt template {template!r} has no {{}} where the class name goes "
                                "(e.g. 'a photo of a {}.'); without it every class gets the same text")
    return out


def _as_pil(image: ImageLike) -> Image.Image:
    from locktune.data.decode import decode_image

    if isinstance(image, Image.Image):
        return decode_image(image)  # as training decodes: size bounds, EXIF orientation, 8-bit
    from locktune.data.images import load_image_file

    return load_image_file(image)


class ZeroShotClassifier:
    """Class names turned into one text embedding each (prompt ensemble); scores images against them."""

    def __init__(self, model: "LitModel", class_names: Sequence[str], weights: np.ndarray):
        self.model = model
        self.class_names = list(class_names)
        self.weights = weights  # [classes, dim], L2-normalised

    def probabilities(self, image_embeddings: np.ndarray) -> np.ndarray:
        """Softmax over classes of logit_scale * cosine similarity. [images, classes]"""
        logits = self.model.logit_scale * (image_embeddings @ self.weights.T)
        logits -= logits.max(axis=1, keepdims=True)  # stable softmax
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """Probabilities [images, classes] (or [classes] for a single image)."""
        single = not isinstance(images, (list, tuple))
        probs = self.probabilities(self.model.encode_image([images] if single else images))
        return probs[0] if single else probs


class LitModel:
    """A trained LiT two-tower model for inference (eval mode, no gradients)."""

    def __init__(self, net: torch.nn.Module):
        self.net = net.eval()
        self.preprocess = net.preprocess
        self.embed_dim = int(net.embed_dim)

    @property
    def logit_scale(self) -> float:
        """1 / temperature, as learned in training: scales cosine similarities into softmax logits."""
        return float(self.net.logit_scale.detach())

    @torch.inference_mode()
    def encode_image(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Paths or PIL images -> L2-normalised embeddings [n, embed_dim] (one row for a single image)."""
        items = [images] if not isinstance(images, (list, tuple)) else list(images)
        out = []
        for start in range(0, len(items), batch_size):
            pixels = torch.stack([self.preprocess(_as_pil(x)) for x in items[start:start + batch_size]])
            out.append(self.net.encode_image(pixels.contiguous(memory_format=torch.channels_last)))
        return torch.cat(out).float().numpy() if out else np.zeros((0, self.embed_dim), np.float32)

    def encode_image_features(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Pooled image-tower outputs (e.g. from the embedding cache) -> L2-normalised embeddings."""
        with torch.inference_mode():
            return self.net.embed_image_features(torch.as_tensor(features)).float().numpy()

    @torch.inference_mode()
    def encode_text(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> L2-normalised embeddings [n, embed_dim] (one row for a single string)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for start in range(0, len(items), batch_size):
            tokens = self.net.tokenize(items[start:start + batch_size])
            out.append(self.net.encode_text(tokens["ids"], tokens["mask"]))
        return torch.cat(out).float().numpy() if out else np.zeros((0, self.embed_dim), np.float32)

    def zero_shot_classifier(self, class_names: Sequence[str],
                             templates: Sequence[str] = DEFAULT_TEMPLATES) -> ZeroShotClassifier:
        """Each class's prompts ("a photo of a {}.") embedded, averaged and renormalised (prompt ensemble)."""
        class_names, templates = checked_labels(class_names), checked_templates(templates)
        texts = [t.format(name) for name in class_names for t in templates]
        emb = self.encode_text(texts).reshape(len(class_names), len(templates), -1).mean(axis=1)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return ZeroShotClassifier(self, class_names, emb.astype(np.float32))

    def classify(self, image: ImageLike, class_names: Sequence[str],
                 templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[tuple[str, float]]:
        """One image against your labels -> [(label, probability)], most likely first; sums to 1."""
        classifier = self.zero_shot_classifier(class_names, templates)
        probs = classifier(image)
        order = np.argsort(-probs, kind="stable")
        return [(classifier.class_names[i], float(probs[i])) for i in order]

    def save(self, folder: str | Path) -> Path:
        """Write a saved-model folder that `locktune.load` reads in any process."""
        from locktune.saved_model import save_pretrained

        return save_pretrained(self.net, folder)


def load(path: str | Path) -> LitModel:
    """Load a trained model: a run folder, a saved-model folder, or an old run's model.pt (read safely)."""
    from locktune.saved_model import load_any

    return LitModel(load_any(path))
