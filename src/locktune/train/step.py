"""One training step's forward and backward, whole or through a gradient cache.

`whole_step`: one graph over this rank's batch.  `gradient_cached_step` (GradCache, Gao et al. 2021):
embed the batch without a graph, take the loss's gradient with respect to the embeddings in row chunks,
then rerun each chunk of the towers with a graph and backpropagate that chunk's slice of the gradient.
Memory is bounded by the chunk, not the batch, and the parameter gradients are the same as
`whole_step`'s (each chunk's dropout masks are replayed by restoring the RNG state; batch norm in an
unlocked image tower sees chunk statistics instead of batch statistics).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from locktune.loss import get_loss


@dataclass
class Batch:
    ids: torch.Tensor  # [b, max_len]
    mask: torch.Tensor  # [b, max_len]
    features: torch.Tensor | None = None  # cached image-tower outputs [b, d] (locked image tower)
    pixels: torch.Tensor | None = None  # [b, 3, H, W] otherwise

    def __len__(self) -> int:
        return self.ids.shape[0]

    def rows(self, start: int, stop: int) -> "Batch":
        pick = lambda t: None if t is None else t[start:stop]  # noqa: E731
        return Batch(self.ids[start:stop], self.mask[start:stop], pick(self.features), pick(self.pixels))


def trim_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop trailing columns that are padding in every row: exact for masked pooling and causal
    end-of-text pooling, and short captions then cost little."""
    length = max(1, int(mask.sum(1).max()))
    return ids[:, :length], mask[:, :length]


def embed(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.features is not None:
        image = model.embed_image_features(batch.features)
    else:
        image = model.encode_image(batch.pixels)
    return image, model.encode_text(*trim_padding(batch.ids, batch.mask))


def whole_step(model, batch: Batch, autocast: AbstractContextManager, loss_name: str = "global") -> torch.Tensor:
    with autocast:
        image, text = embed(model, batch)
        loss = get_loss(loss_name).whole(model, image, text)
    loss.backward()
    return loss.detach()


def gradient_cached_step(model, batch: Batch, autocast: AbstractContextManager, chunk: int,
                         loss_name: str = "global") -> torch.Tensor:
    rng_states, images, texts = [], [], []
    with torch.no_grad():
        for start in range(0, len(batch), chunk):
            rng_states.append(torch.get_rng_state())
            with autocast:
                image, text = embed(model, batch.rows(start, start + chunk))
            images.append(image.float())
            texts.append(text.float())
    after = torch.get_rng_state()
    loss, image_grad, text_grad = get_loss(loss_name).grads(model, torch.cat(images), torch.cat(texts), chunk)
    for k, start in enumerate(range(0, len(batch), chunk)):
        torch.set_rng_state(rng_states[k])
        with autocast:
            image, text = embed(model, batch.rows(start, start + chunk))
        # An image side with nothing to train (locked or frozen tower and no head) has no graph.
        pairs = [(out.float(), grad[start:start + chunk]) for out, grad in ((image, image_grad), (text, text_grad))
                 if out.requires_grad]
        if pairs:
            torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
    torch.set_rng_state(after)
    return loss
