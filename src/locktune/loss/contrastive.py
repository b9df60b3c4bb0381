"""Symmetric InfoNCE over image-text pairs, written once for one process and for many.

Each process scores its own rows against the columns gathered from every process.  The gather's
backward sums, over all processes, the gradient each one took with respect to the gathered columns and
hands every process the part for its own embeddings.  With gradients then averaged over processes, a
step equals the single-process step on the global batch (tests/test_distributed.py checks it).

Two ways to take the step:
- `contrastive_loss`: one autograd graph over the batch (the usual way).
- `contrastive_loss_grads`: the loss and its gradient with respect to the embeddings only, computed in
  row chunks so memory grows with chunk x batch instead of batch x batch.  The trainer's gradient cache
  then backpropagates that gradient through the towers chunk by chunk.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from locktune.runtime.placement import full_precision


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss depends on every rank's embeddings
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' `x` stacked in rank order (differentiable), and this rank's row offset.
    Every rank must pass the same number of rows.  Alone: `(x, 0)`."""
    if not _distributed():
        return x, 0
    return _GatherWithGrad.apply(x), dist.get_rank() * x.shape[0]


def no_gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The local loss: each rank's rows against its own columns only (the paper's 'local' ablation)."""
    return x, 0


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                     gather=gather_with_grad) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy; pair i's positive is column i.

    Embeddings are expected L2-normalised.  Computed in float32 even when called inside an autocast region
    (autocast is switched off here: under it the matmuls would run in bf16).
    """
    with full_precision(image_emb.device):
        image_emb, text_emb = image_emb.float(), text_emb.float()
        all_images, offset = gather(image_emb)
        all_texts, _ = gather(text_emb)
        labels = torch.arange(image_emb.shape[0], device=image_emb.device) + offset
        logits_image_to_text = logit_scale * image_emb @ all_texts.T
        logits_text_to_image = logit_scale * text_emb @ all_images.T
        return (F.cross_entropy(logits_image_to_text, labels) + F.cross_entropy(logits_text_to_image, labels)) / 2


def _gather_plain(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def contrastive_loss_grads(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                           chunk_rows: int, global_loss: bool = True
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, d loss/d image_emb, d loss/d text_emb) for this rank's embeddings, computed in row chunks.

    The same loss as `contrastive_loss`, in float32 on the embeddings' device; the logit scale's gradient is
    accumulated into its `.grad`.  Memory: chunk_rows x global batch logits at a time.
    """
    with torch.autocast(device_type=image_emb.device.type, enabled=False):
        return _contrastive_loss_grads(image_emb, text_emb, logit_scale, chunk_rows, global_loss)


def _contrastive_loss_grads(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                            chunk_rows: int, global_loss: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image_emb, text_emb = image_emb.detach().float(), text_emb.detach().float()
    distributed = global_loss and _distributed()
    rows = image_emb.shape[0]
    offset = dist.get_rank() * rows if distributed else 0
    all_images = (_gather_plain(image_emb) if distributed else image_emb).requires_grad_()
    all_texts = (_gather_plain(text_emb) if distributed else text_emb).requires_grad_()
    # A leaf copy of the scale: each chunk's backward stops here; the graph that made the scale from its
    # parameter is walked once at the end.
    scale = logit_scale.detach().float().requires_grad_()
    # On the embeddings' device (a CPU total would pull every chunk's part over to the host).
    total = torch.zeros((), dtype=torch.float64, device=image_emb.device)
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        labels = torch.arange(start, stop, device=image_emb.device) + offset
        images, texts = all_images[offset + start:offset + stop], all_texts[offset + start:offset + stop]
        part = (F.cross_entropy(scale * images @ all_texts.T, labels, reduction="sum")
                + F.cross_entropy(scale * texts @ all_images.T, labels, reduction="sum")) / (2 * rows)
        part.backward()  # into all_images.grad, all_texts.grad, scale.grad
        total += part.detach().double()
    if logit_scale.requires_grad:
        logit_scale.backward(scale.grad)
    image_grad, text_grad = all_images.grad, all_texts.grad
    if distributed:
        dist.all_reduce(image_grad)
        dist.all_reduce(text_grad)
    return (total.float(), image_grad[offset:offset + rows], text_grad[offset:offset + rows])
