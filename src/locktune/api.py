"""The public API: load a trained model and use it in three lines.

    import locktune
    model = locktune.load("runs/demo")                 # run folder or saved-model folder
    model.classify("cat.png", ["cat", "dog", "car"])   # -> [("cat", 0.91), ("dog", 0.07), ("car", 0.02)]
    # (a model trained with train.loss=sigmoid scores each label on its own: the numbers need not sum to 1)

Embeddings are L2-normalised float32, as numpy arrays by default (straight into numpy, scikit-learn or a
search index) or as torch tensors on the model's device with `return_tensors="pt"`.  The conventions of
open_clip / OpenAI CLIP hold where they apply: `model(images, texts)` gives `(logits_per_image,
logits_per_text)`, `model.logit_scale` is the learned *log* scale (`model.logit_scale.exp()` multiplies
cosines; `model.scale` is that number as a float), `.to(device)`, `model.tokenizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

ImageLike = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]
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


def _as_pil(image, where: str) -> Image.Image:
    """A path, a PIL image or an HWC numpy array (uint8, or float in [0, 1]) as a PIL image; anything else,
    a missing file or a file that is not an image is one error naming the input."""
    from locktune.errors import LocktuneError

    if isinstance(image, Image.Image):
        return _decoded(image, where)  # as training decodes: size bounds, EXIF orientation, 8-bit
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4)):
            if array.dtype != np.uint8:
                array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
            return _decoded(Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array), where)
        raise LocktuneError(f"{where}: a numpy image should be H x W (grey) or H x W x 3/4 (RGB/RGBA), "
                            f"got shape {array.shape}")
    if not isinstance(image, (str, Path)):
        raise LocktuneError(f"{where}: expected a path, a PIL image, a numpy array or a preprocessed tensor, "
                            f"got {type(image).__name__}")
    from locktune.data.images import load_image_file

    if not Path(image).is_file():
        raise LocktuneError(f"{where}: no image file at '{image}'")
    try:
        return load_image_file(image)
    except Exception as error:  # Pillow / cairosvg raise many types for a file that is not an image
        raise LocktuneError(f"{where}: '{image}' is not a readable image ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:120] if str(error) else 'unreadable'})") from None


def _decoded(image: Image.Image, where: str) -> Image.Image:
    from locktune.data.decode import decode_image
    from locktune.errors import LocktuneError

    try:
        return decode_image(image)
    except Exception as error:  # a size out of bounds, or a mode Pillow cannot convert
        raise LocktuneError(f"{where}: {str(error).splitlines()[0][:160] or type(error).__name__}") from None


def _as_list(items, single_types) -> tuple[list, bool]:
    """(the items as a list, whether one item was given)."""
    if isinstance(items, single_types):
        return [items], True
    return list(items), False


class ZeroShotClassifier:
    """Class names turned into one text embedding each (prompt ensemble); scores images against them."""

    def __init__(self, model: "LitModel", class_names: Sequence[str], weights: np.ndarray):
        self.model = model
        self.class_names = list(class_names)
        self.weights = weights  # [classes, dim], L2-normalised

    def probabilities(self, image_embeddings: np.ndarray) -> np.ndarray:
        """[images, classes]: for a softmax-trained model, softmax over classes of scale * cosine (rows sum
        to 1); for a sigmoid-trained one, sigmoid(scale * cosine + logit_bias) for each class on its own (rows
        need not sum to 1).  `model.scores` says which."""
        from locktune.loss import label_probabilities

        return label_probabilities(np.asarray(image_embeddings) @ self.weights.T, self.model.loss, self.model.scale,
                                   self.model.logit_bias)

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """Probabilities [images, classes] (or [classes] for a single image)."""
        probs = self.probabilities(self.model.encode_image(images))
        return probs[0] if _is_single_image(images) else probs

    def __repr__(self) -> str:
        shown = ", ".join(self.class_names[:5]) + (", ..." if len(self.class_names) > 5 else "")
        return f"ZeroShotClassifier({len(self.class_names)} classes: {shown})"


def _is_single_image(images) -> bool:
    if isinstance(images, torch.Tensor):
        return images.ndim == 3
    if isinstance(images, np.ndarray):
        return images.ndim in (2, 3) and not (images.ndim == 3 and images.shape[-1] not in (1, 3, 4))
    return not isinstance(images, (list, tuple))


class LitModel:
    """A trained LiT two-tower model for inference (eval mode, no gradients)."""

    def __init__(self, net: torch.nn.Module):
        self.net = net.eval()
        self.preprocess = net.preprocess
        self.embed_dim = int(net.embed_dim)

    # ------------------------------------------------------------------ torch conventions
    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> "LitModel":
        """Move the model (e.g. to "cuda", or "auto"); returns itself, as torch modules do."""
        from locktune.runtime.placement import resolve_device

        self.net.to(resolve_device(device))
        return self

    @property
    def logit_scale(self) -> torch.Tensor:
        """The learned log of the logit scale, as in open_clip: `logit_scale.exp()` multiplies cosines."""
        return self.net.logit_scale.detach().log()

    @property
    def scale(self) -> float:
        """1 / temperature (`logit_scale.exp()`), the number that turns cosine similarities into logits."""
        return float(self.net.logit_scale.detach())

    @property
    def tokenizer(self):
        """texts -> {"ids", "mask"} tensors, the text tower's own tokenizer and maximum length."""
        return self.net.tokenize

    @property
    def logit_bias(self) -> float | None:
        """The sigmoid loss's learned bias b in sigmoid(scale * cos + b); None for a softmax-trained model."""
        bias = getattr(self.net, "logit_bias", None)
        return None if bias is None else float(bias.detach())

    @property
    def loss(self) -> str:
        """The loss the model was trained with: global | local (softmax) | sigmoid."""
        return self.net.loss

    @property
    def scores(self) -> str:
        """What `classify` returns: 'softmax' (over your labels, sums to 1) or 'sigmoid' (each label on its own)."""
        from locktune.loss import get_loss

        return get_loss(self.loss).scores

    def __repr__(self) -> str:
        config = self.net.config
        return (f"LitModel(setting={config.setting}, image_tower={config.image_tower} at "
                f"{self.preprocess.image_size}px, text_tower={config.text_tower}, embed_dim={self.embed_dim}, "
                f"scale={self.scale:.1f}, device={self.device})")

    def __call__(self, images, texts) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image [images, texts], logits_per_text [texts, images]): scale x cosine, as CLIP's forward
        (plus the learned bias for a sigmoid-trained model: the logits its loss saw)."""
        image = self.encode_image(images, return_tensors="pt")
        text = self.encode_text(texts, return_tensors="pt")
        logits = self.net.logit_scale.detach() * image @ text.T + (self.logit_bias or 0.0)
        return logits, logits.T

    # ------------------------------------------------------------------ embeddings
    @torch.inference_mode()
    def encode_image(self, images, batch_size: int = 32, return_tensors: str = "np"):
        """Images -> L2-normalised embeddings [n, embed_dim] (one row for a single image).

        Each image is a path, a PIL image or an H x W x 3 numpy array (a list of them, or an N x H x W x 3
        array, for a batch), or already-preprocessed pixels: a [3, H, W] or [N, 3, H, W] tensor, as
        `model.preprocess` makes them.  return_tensors: "np" (numpy) or "pt" (torch, on the model's device)."""
        if isinstance(images, torch.Tensor):
            pixels = images.unsqueeze(0) if images.ndim == 3 else images
            batches = [pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)]
        else:
            batches = (self._preprocessed(images, start, batch_size) for start in range(0, _count(images), batch_size))
        out = [self.net.encode_image(b.to(self.device).contiguous(memory_format=torch.channels_last)) for b in batches]
        return _returned(out, self.embed_dim, self.device, return_tensors)

    def _preprocessed(self, images, start: int, batch_size: int) -> torch.Tensor:
        items = [images] if _is_single_image(images) else images
        return torch.stack([self.preprocess(_as_pil(items[i], f"image {i}"))
                            for i in range(start, min(start + batch_size, len(items)))])

    def encode_image_features(self, features: np.ndarray | torch.Tensor, return_tensors: str = "np"):
        """Pooled image-tower outputs (e.g. from the embedding cache) -> L2-normalised embeddings."""
        with torch.inference_mode():
            out = self.net.embed_image_features(torch.as_tensor(features).to(self.device))
        return _returned([out], self.embed_dim, self.device, return_tensors)

    @torch.inference_mode()
    def encode_text(self, texts: str | Sequence[str], batch_size: int = 256, return_tensors: str = "np"):
        """Texts -> L2-normalised embeddings [n, embed_dim] (one row for a single string).
        return_tensors: "np" (numpy) or "pt" (torch, on the model's device)."""
        from locktune.errors import LocktuneError
        from locktune.train.step import trim_padding

        items, _ = _as_list(texts, str)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise LocktuneError(f"text {i} is {type(text).__name__} {text!r:.60}; encode_text takes strings")
        out = []
        for start in range(0, len(items), batch_size):
            tokens = self.net.tokenize(items[start:start + batch_size])
            ids, mask = trim_padding(tokens["ids"], tokens["mask"])  # exact: pooling ignores padding
            out.append(self.net.encode_text(ids.to(self.device), mask.to(self.device)))
        return _returned(out, self.embed_dim, self.device, return_tensors)

    # ------------------------------------------------------------------ zero-shot
    def zero_shot_classifier(self, class_names: Sequence[str],
                             templates: Sequence[str] = DEFAULT_TEMPLATES) -> ZeroShotClassifier:
        """Each class's prompts ("a photo of a {}.") embedded, averaged and renormalised (prompt ensemble)."""
        class_names, templates = checked_labels(class_names), checked_templates(templates)
        texts = [t.format(name) for name in class_names for t in templates]
        emb = self.encode_text(texts).reshape(len(class_names), len(templates), -1).mean(axis=1)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return ZeroShotClassifier(self, class_names, emb.astype(np.float32))

    def classify(self, images, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES):
        """Images against your labels -> [(label, probability)], most likely first; for a batch (a list of
        images, or a batch array/tensor), one such list per image.  Softmax-trained models: the probabilities
        sum to 1; sigmoid-trained (`train.loss=sigmoid`): each is the chance that this label matches the image,
        on its own (see `scores`)."""
        classifier = self.zero_shot_classifier(class_names, templates)
        probs = classifier(images)
        ranked = [[(classifier.class_names[i], float(row[i])) for i in np.argsort(-row, kind="stable")]
                  for row in np.atleast_2d(probs)]
        return ranked[0] if _is_single_image(images) else ranked

    @property
    def fingerprint(self) -> str:
        """The weights' fingerprint (`saved_model.weights_fingerprint`): equal for a run and its export."""
        if getattr(self, "_fingerprint", None) is None:
            from locktune.saved_model import weights_fingerprint

            self._fingerprint = weights_fingerprint(self.net)
        return self._fingerprint

    def save(self, folder: str | Path) -> Path:
        """Write a saved-model folder that `locktune.load` reads in any process."""
        from locktune.saved_model import save_pretrained

        return save_pretrained(self.net, folder)


def _count(images) -> int:
    return 1 if _is_single_image(images) else len(images)


def _returned(parts: list[torch.Tensor], dim: int, device, return_tensors: str):
    from locktune.errors import LocktuneError

    if return_tensors not in ("np", "pt"):
        raise LocktuneError(f"return_tensors should be 'np' (numpy) or 'pt' (torch), not {return_tensors!r}")
    out = torch.cat(parts).float() if parts else torch.zeros((0, dim), device=device)
    return out if return_tensors == "pt" else out.cpu().numpy()


def load(path: str | Path, device: str | torch.device | None = "auto") -> LitModel:
    """Load a trained model: a run folder, a saved-model folder, or an old run's model.pt (read safely).
    `device`: where it runs, the same word as `--device` and `train.device` (auto: CUDA when visible, else the
    CPU; cpu; cuda:1; ...)."""
    from locktune.saved_model import load_any

    return LitModel(load_any(path)).to(device or "auto")
