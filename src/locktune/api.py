"""The public API: `locktune.load` and the one model type it returns, shaped like open_clip's.

    import locktune
    model = locktune.load("runs/demo")                    # a run folder or a saved-model folder
    image = model.encode_image("cat.png")                 # torch.Tensor [1, D] on model.device, L2-normalised
    text = model.encode_text(["a cat", "a dog"])          # [2, D]
    probs = (model.logit_scale.exp() * image @ text.T).softmax(dim=-1)
    model.classify("cat.png", ["cat", "dog", "car"])      # -> [("cat", 0.91), ("dog", 0.07), ("car", 0.02)]

The conventions of open_clip / OpenAI CLIP hold: `encode_image` / `encode_text` return torch tensors on the
model's device (`.cpu().numpy()` for numpy); `model.preprocess` turns an image into the pixel tensor
`encode_image` runs on; `model(images, texts)` gives `(logits_per_image, logits_per_text)`;
`model.logit_scale` is the learned *log* scale (`model.logit_scale.exp()` multiplies cosines).  Unlike
open_clip, `encode_image` also takes paths, PIL images and numpy arrays and preprocesses them itself, and
its embeddings are always L2-normalised.  A model trained with `train.loss=sigmoid` scores each label on its
own in `classify` (the numbers need not sum to 1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from locktune.errors import LocktuneError

ImageLike = Union[str, Path, bytes, Image.Image, np.ndarray, torch.Tensor]
DEFAULT_TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "an icon of a {}.", "{}")
# Channels a numpy image may have on its last axis: grey, grey + alpha, RGB, RGBA.
_ARRAY_CHANNELS = (1, 2, 3, 4)


def _checked_labels(class_names: Sequence[str]) -> list[str]:
    """A list of distinct, non-empty labels: a bare string (which would be read letter by letter), a
    non-string or an empty label is an error; repeated labels are merged, with a note on stderr."""
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


def _checked_templates(templates: Sequence[str]) -> list[str]:
    """Prompt templates that each place the class name: one without `{}` would make every class identical."""
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


# ---------------------------------------------------------------------------------------------- image inputs
def _array_kind(array: np.ndarray) -> str | None:
    """'one' (H x W, or H x W x C), 'batch' (N x H x W x C) or None (no image layout)."""
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in _ARRAY_CHANNELS):
        return "one"
    if array.ndim == 4 and array.shape[-1] in _ARRAY_CHANNELS:
        return "batch"
    return None


def _array_layouts(where: str, shape: tuple) -> LocktuneError:
    return LocktuneError(f"{where}: a numpy image should be H x W x 3 (RGB) or x 4 (RGBA) or H x W (grey), uint8 or "
                         f"float in [0, 1], or a batch of them N x H x W x 3; got shape {shape} (preprocessed "
                         "pixels go in as a torch tensor (N, 3, H, W))")


def _image_items(images) -> tuple[torch.Tensor | list, bool]:
    """What `encode_image` was given, as (an [N, ...] tensor or a list of single images, whether it was one
    image).  A numpy array or tensor is one image or a batch by its layout; any other layout is an error."""
    if isinstance(images, torch.Tensor):  # its layout is checked by `LitModel._checked`
        return images, images.ndim == 3
    if isinstance(images, np.ndarray):
        kind = _array_kind(images)
        if kind is None:
            raise _array_layouts("images", tuple(images.shape))
        return ([images], True) if kind == "one" else (list(images), False)
    if isinstance(images, (str, Path, bytes, bytearray, Image.Image)):
        return [images], True
    if isinstance(images, (list, tuple)):
        return list(images), False
    raise LocktuneError(f"images: expected a path, a PIL image, a numpy array, a pixel tensor or a list of them, "
                        f"got {type(images).__name__}")


def _array_as_pil(array: np.ndarray, where: str) -> Image.Image:
    """An H x W (x C) numpy image as a PIL image: uint8 as it is, other integers within 0-255, floats within
    [0, 1]; values out of range are an error, not clipped (a 0-255 float image clipped would be all white)."""
    if _array_kind(array) != "one":
        raise _array_layouts(where, tuple(array.shape))
    if array.dtype != np.uint8:
        if array.dtype.kind not in "iuf" or array.size == 0:
            raise LocktuneError(f"{where}: numpy pixels should be uint8 (0-255) or float (0-1), got {array.dtype}")
        low, high = float(np.min(array)), float(np.max(array))
        top = 1.0 if array.dtype.kind == "f" else 255.0
        if not (0.0 <= low and high <= top):  # NaN fails both
            raise LocktuneError(f"{where}: {array.dtype} pixels should lie in [0, {top:g}], got values from {low:g} to "
                                f"{high:g}" + ("; pass uint8 for 0-255 values" if array.dtype.kind == "f" else ""))
        scaled = array.astype(np.float64) * (255.0 / top)
        array = np.rint(scaled).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(array))


def _as_pil(image, where: str) -> Image.Image:
    """A path, encoded bytes, a PIL image or an H x W (x C) numpy array, decoded as training decodes
    (`data/decode.py`: size bounds, EXIF orientation, 8-bit; transparency is composited on white by the
    model's preprocessing); anything else, a missing file or a file that is not an image is one error naming
    the input."""
    from locktune.data.decode import decode_image

    if isinstance(image, np.ndarray):
        image = _array_as_pil(image, where)
    if isinstance(image, (Image.Image, bytes, bytearray)):
        try:
            return decode_image(image)
        except Exception as error:  # a size out of bounds, bytes Pillow cannot read, a mode it cannot convert
            raise LocktuneError(f"{where}: {str(error).splitlines()[0][:160] if str(error) else type(error).__name__}"
                                ) from None
    if not isinstance(image, (str, Path)):
        raise LocktuneError(f"{where}: expected a path, a PIL image, a numpy array or a preprocessed tensor, "
                            f"got {type(image).__name__}")
    if not Path(image).is_file():
        raise LocktuneError(f"{where}: no image file at '{image}'")
    try:
        return decode_image(Path(image))
    except Exception as error:  # Pillow / cairosvg raise many types for a file that is not an image
        raise LocktuneError(f"{where}: '{image}' is not a readable image ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:120] if str(error) else 'unreadable'})") from None


def _as_list(items, single_types) -> tuple[list, bool]:
    """(the items as a list, whether one item was given)."""
    if isinstance(items, single_types):
        return [items], True
    return list(items), False


class ZeroShotClassifier:
    """Class names turned into one text embedding each (a prompt ensemble); scores images against them.

    `weights` is a [classes, embed_dim] tensor of L2-normalised class embeddings on the model's device."""

    def __init__(self, model: "LitModel", class_names: Sequence[str], weights: torch.Tensor):
        self.model = model
        self.class_names = list(class_names)
        self.weights = weights

    def probabilities(self, image_embeddings: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Image embeddings [images, embed_dim] (torch or numpy) -> probabilities [images, classes], a float32
        tensor on the model's device.  A softmax-trained model: softmax over the classes of scale x cosine (rows
        sum to 1); a sigmoid-trained one: sigmoid(scale x cosine + logit_bias) for each class on its own (rows
        need not sum to 1).  `model.scores` says which."""
        from locktune.loss import label_probabilities

        embeddings = torch.as_tensor(image_embeddings).to(self.weights.device, torch.float32)
        cosines = (embeddings @ self.weights.T).double().cpu().numpy()
        probs = label_probabilities(cosines, self.model.loss, self.model.scale, self.model.logit_bias)
        return torch.from_numpy(probs).to(self.model.device)

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Probabilities [images, classes] (or [classes] for a single image), as `probabilities`."""
        probs = self.probabilities(self.model.encode_image(images))
        return probs[0] if _image_items(images)[1] else probs

    def __repr__(self) -> str:
        shown = ", ".join(self.class_names[:5]) + (", ..." if len(self.class_names) > 5 else "")
        return f"ZeroShotClassifier({len(self.class_names)} classes: {shown})"


class LitModel:
    """A trained LiT two-tower model for inference, as `locktune.load` returns it (eval mode, no gradients).

    Shaped like an open_clip model: `encode_image`, `encode_text`, `preprocess`, `tokenizer`, `logit_scale`
    (the learned log scale), `model(images, texts)` and `.to(device)`.  Every embedding is a float32 torch
    tensor [N, embed_dim] on `model.device`, L2-normalised."""

    def __init__(self, net: torch.nn.Module):
        self.net = net.eval()  # the internal TwoTower; not part of the public API
        self.embed_dim = int(net.embed_dim)

    # ------------------------------------------------------------------ torch conventions
    @property
    def device(self) -> torch.device:
        """Where the model runs; embeddings come back on this device."""
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> "LitModel":
        """Move the model (e.g. to "cuda", "cpu" or "auto"); returns itself, as torch modules do."""
        from locktune.runtime.placement import resolve_device

        self.net.to(resolve_device(device))
        return self

    @property
    def image_size(self) -> int:
        """The side in pixels of the square images the image tower was trained on (what `preprocess` makes)."""
        return int(self.net.preprocess.image_size)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The learned log of the logit scale (a 0-d tensor), as in open_clip: `logit_scale.exp()` multiplies
        cosine similarities into logits.  Capped at log(model.logit_scale_max), as training caps it."""
        return self.net.log_logit_scale.detach().clamp(max=math.log(self.net.config.logit_scale_max))

    @property
    def scale(self) -> float:
        """`logit_scale.exp()` as a float (1 / temperature): the number that turns cosines into logits."""
        return float(self.logit_scale.exp())

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
        return (f"LitModel(setting={config.setting}, image_tower={config.image_tower} at {self.image_size}px, "
                f"text_tower={config.text_tower}, embed_dim={self.embed_dim}, scale={self.scale:.1f}, "
                f"device={self.device})")

    def __call__(self, images, texts) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image [images, texts], logits_per_text [texts, images]), as CLIP's forward:
        `logit_scale.exp()` x cosine (plus the learned bias for a sigmoid-trained model: the logits its loss
        saw).  `images` and `texts` are anything `encode_image` / `encode_text` take."""
        image, text = self.encode_image(images), self.encode_text(texts)
        logits = self.logit_scale.exp() * image @ text.T + (self.logit_bias or 0.0)
        return logits, logits.T

    # ------------------------------------------------------------------ images
    def preprocess(self, images) -> torch.Tensor:
        """Images -> the float pixel tensor `encode_image` runs on: [3, S, S] for one image, [N, 3, S, S] for a
        batch, S = `image_size`.

        Takes what `encode_image` takes.  A path, PIL image or numpy array is decoded as training decodes it
        (EXIF orientation applied; transparency, as in RGBA, LA or palette PNGs, composited on white) and
        resized and normalised with the image tower's own recipe, on the CPU.  A tensor is already
        preprocessed: it is checked (3 channels, S x S, float) and returned as it is."""
        items, single = _image_items(images)
        if isinstance(items, torch.Tensor):
            return self._checked(items, "images", batch=True)
        pixels = self._pixels(items, 0, len(items))
        return pixels[0] if single else pixels

    def _pixels(self, items, start: int, stop: int) -> torch.Tensor:
        """Items start..stop of `_image_items`' output (a tensor already `_checked`) as pixels [n, 3, S, S]."""
        if isinstance(items, torch.Tensor):
            return items[start:stop]
        size = self.image_size
        if stop <= start:
            return torch.zeros((0, 3, size, size))
        return torch.stack([self._one(items[i], f"image {i}") for i in range(start, stop)])

    def _one(self, item, where: str) -> torch.Tensor:
        if isinstance(item, torch.Tensor):
            return self._checked(item, where, batch=False)
        return self.net.preprocess(_as_pil(item, where))

    def _checked(self, pixels: torch.Tensor, where: str, batch: bool) -> torch.Tensor:
        """`pixels` as given (a batch: [N, 3, S, S] or one [3, S, S]; else one [3, S, S]) once checked, or one
        error naming the input and the layout the image tower needs."""
        size = self.image_size
        want = (f"(N, 3, {size}, {size}) float pixels as from model.preprocess (or (3, {size}, {size}) for one image)"
                if batch else f"(3, {size}, {size}) float pixels as from model.preprocess")
        shape = tuple(pixels.shape)
        ranks = (3, 4) if batch else (3,)
        if pixels.ndim not in ranks or shape[-3] != 3 or shape[-2:] != (size, size):
            hint = ("; pass PIL images, paths or numpy arrays to have them resized" if pixels.ndim in ranks
                    and shape[-3] == 3 else "")
            raise LocktuneError(f"{where}: expected {want}; got {shape}{hint}")
        if not pixels.is_floating_point():
            raise LocktuneError(f"{where}: expected {want}; got {str(pixels.dtype).replace('torch.', '')} values "
                                "(pass raw images as PIL images, paths or numpy arrays)")
        if not bool(torch.isfinite(pixels).all()):
            raise LocktuneError(f"{where}: the pixel tensor holds NaN or infinite values")
        return pixels

    def encode_image(self, images, batch_size: int = 32) -> torch.Tensor:
        """Images -> L2-normalised embeddings, a float32 tensor [N, embed_dim] on the model's device ([1,
        embed_dim] for one image).

        `images` is one image or a batch: a path, a PIL image, encoded bytes, a numpy array H x W x 3 (RGB), x 4
        (RGBA) or H x W (grey), uint8 or float in [0, 1] (a list of these, or an N x H x W x 3 array, for a
        batch), or preprocessed pixels: a [3, S, S] or [N, 3, S, S] float tensor as `model.preprocess` makes
        them.  Raw images are preprocessed as `preprocess` does; a tensor of another layout (channels, rank or
        size) is one LocktuneError naming the input and what the model expects, never resized or guessed."""
        items, _ = _image_items(images)
        if isinstance(items, torch.Tensor):
            items = self._checked(items, "images", batch=True)
            items = items[None] if items.ndim == 3 else items
        out = []
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                pixels = self._pixels(items, start, min(start + batch_size, len(items)))
                pixels = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
                out.append(self.net.encode_image(pixels).float())
        return torch.cat(out) if out else torch.zeros((0, self.embed_dim), device=self.device)

    def encode_image_features(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Pooled image-tower outputs [N, tower dim] (e.g. from the embedding cache) -> L2-normalised embeddings
        [N, embed_dim] on the model's device."""
        with torch.no_grad():
            return self.net.embed_image_features(torch.as_tensor(features).to(self.device)).float()

    # ------------------------------------------------------------------ texts
    def encode_text(self, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> L2-normalised embeddings, a float32 tensor [N, embed_dim] on the model's device ([1,
        embed_dim] for one string).  Each text is tokenised by the text tower's own tokenizer (truncated to
        the length it was trained with)."""
        from locktune.train.step import trim_padding

        items, _ = _as_list(texts, str)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise LocktuneError(f"text {i} is {type(text).__name__} {text!r:.60}; encode_text takes strings")
        out = []
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                tokens = self.net.tokenize(items[start:start + batch_size])
                ids, mask = trim_padding(tokens["ids"], tokens["mask"])  # exact: pooling ignores padding
                out.append(self.net.encode_text(ids.to(self.device), mask.to(self.device)).float())
        return torch.cat(out) if out else torch.zeros((0, self.embed_dim), device=self.device)

    # ------------------------------------------------------------------ zero-shot
    def zero_shot_classifier(self, class_names: Sequence[str],
                             templates: Sequence[str] = DEFAULT_TEMPLATES) -> ZeroShotClassifier:
        """Each class's prompts ("a photo of a {}.") embedded, averaged and renormalised (a prompt ensemble);
        the classifier scores images against them.  Reuse it to classify many images against one label set."""
        class_names, templates = _checked_labels(class_names), _checked_templates(templates)
        texts = [t.format(name) for name in class_names for t in templates]
        emb = self.encode_text(texts).reshape(len(class_names), len(templates), -1).mean(dim=1)
        return ZeroShotClassifier(self, class_names, torch.nn.functional.normalize(emb, dim=-1))

    def classify(self, images, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES):
        """Images against your labels -> [(label, probability)], most likely first; for a batch (a list of
        images, or a batch array/tensor), one such list per image.  Softmax-trained models: the probabilities
        sum to 1; sigmoid-trained (`train.loss=sigmoid`): each is the chance that this label matches the image,
        on its own (see `scores`)."""
        classifier = self.zero_shot_classifier(class_names, templates)
        probs = classifier.probabilities(self.encode_image(images)).cpu().numpy()
        ranked = [[(classifier.class_names[i], float(row[i])) for i in np.argsort(-row, kind="stable")]
                  for row in probs]
        return ranked[0] if _image_items(images)[1] else ranked

    # ------------------------------------------------------------------ files
    @property
    def fingerprint(self) -> str:
        """The weights' fingerprint (16 hex digits): equal for a run and its export, different for any other
        weights.  Indexes record it, and `locktune serve` checks it."""
        if getattr(self, "_fingerprint", None) is None:
            from locktune.saved_model import weights_fingerprint

            self._fingerprint = weights_fingerprint(self.net)
        return self._fingerprint

    def save(self, folder: str | Path) -> Path:
        """Write a saved-model folder that `locktune.load` reads in any process; returns the folder."""
        from locktune.saved_model import save_pretrained

        return save_pretrained(self.net, folder)


def load(path: str | Path, device: str | torch.device | None = "auto") -> LitModel:
    """Load a trained model for inference: a run folder, a saved-model folder (`locktune export`), or an old
    run's model.pt (read safely: tensors only, never pickled code).

    `device`: where it runs, the same word as `--device` and `train.device` (auto: CUDA when visible, else the
    CPU; cpu; cuda:1; ...)."""
    from locktune.saved_model import load_any

    return LitModel(load_any(path)).to(device or "auto")
