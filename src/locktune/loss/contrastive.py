"""Symmetric InfoNCE over image-text pairs, written once for one process and for many.

Each process scores its own rows against the columns gathered from every process.  With one process
that is the usual symmetric loss over the batch; with N processes, averaging the N per-process losses
(which DDP's gradient averaging does) gives exactly the loss over the global batch, because each
process's rows are a disjoint slice of the global rows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' `x` stacked in rank order, gradients flowing into this rank's slice; and this rank's
    row offset.  Without an initialised process group: `(x, 0)`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    rank = dist.get_rank()
    parts[rank] = x  # the local slice keeps its autograd history
    return torch.cat(parts), rank * x.shape[0]


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                     gather=gather_with_grad) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy; pair i's positive is column i.

    Embeddings are expected L2-normalised.  The matmuls run in float32 whatever the autocast dtype.
    """
    image_emb, text_emb = image_emb.float(), text_emb.float()
    all_images, offset = gather(image_emb)
    all_texts, _ = gather(text_emb)
    labels = torch.arange(image_emb.shape[0], device=image_emb.device) + offset
    logits_image_to_text = logit_scale * image_emb @ all_texts.T
    logits_text_to_image = logit_scale * text_emb @ all_images.T
    return (F.cross_entropy(logits_image_to_text, labels) + F.cross_entropy(logits_text_to_image, labels)) / 2
