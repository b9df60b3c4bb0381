"""The pairwise sigmoid loss of SigLIP (Zhai et al., ICCV 2023), for one process and for many.

Every image-text pair of the global batch is an independent binary decision: matching (z = +1) or not
(z = -1), scored by the logit t * cos + b with a learned scale t and bias b:

    loss = -(1/n) * sum_i sum_j log sigmoid(z_ij * (t * cos_ij + b))

n is the batch size (big_vision sums over the n x n pairs and takes the mean over image rows).  Each
process scores its own image rows against the texts gathered from every process, with the gradient
flowing back to the rank that owns each text; its loss is its rows' share, so the mean over processes
of the losses, and of the parameter gradients, is the single-process full batch's.

Two ways to take the step, as for the softmax loss (`loss.contrastive`):
- `sigmoid_loss`: one autograd graph over this rank's rows x the global batch.
- `sigmoid_loss_grads`: the loss and its gradients with respect to the embeddings, in row chunks (memory
  chunk x global batch), for the gradient cache; the scale's and bias's gradients go into their `.grad`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from locktune.loss.contrastive import _distributed, _gather_plain, gather_with_grad


def _signs(start: int, stop: int, offset: int, columns: int, device) -> torch.Tensor:
    """z for image rows start..stop (of this rank, whose first row is global row `offset`) x all texts."""
    rows = torch.arange(start, stop, device=device)[:, None] + offset
    return torch.where(rows == torch.arange(columns, device=device)[None, :], 1.0, -1.0)


def sigmoid_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor, gather=gather_with_grad) -> torch.Tensor:
    """This rank's share of the pairwise sigmoid loss: its image rows against every text of the global batch.

    Embeddings are expected L2-normalised; the matmul runs in float32 whatever the autocast dtype.
    """
    image_emb, text_emb = image_emb.float(), text_emb.float()
    all_texts, offset = gather(text_emb)
    logits = logit_scale * image_emb @ all_texts.T + logit_bias
    signs = _signs(0, image_emb.shape[0], offset, all_texts.shape[0], image_emb.device)
    return -F.logsigmoid(signs * logits).sum() / image_emb.shape[0]


def sigmoid_loss_grads(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                       logit_bias: torch.Tensor, chunk_rows: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, d loss/d image_emb, d loss/d text_emb) for this rank's embeddings, computed in row chunks.

    The same loss as `sigmoid_loss`.  The gradients of the scale and the bias are accumulated through
    them into their parameters' `.grad`.  Memory: chunk_rows x global batch logits at a time.
    """
    images = image_emb.detach().float().clone().requires_grad_()
    text_emb = text_emb.detach().float()
    distributed = _distributed()
    rows = images.shape[0]
    offset = dist.get_rank() * rows if distributed else 0
    all_texts = (_gather_plain(text_emb) if distributed else text_emb.clone()).requires_grad_()
    # Leaf copies: each chunk's backward stops here; the graphs that made them are walked once at the end.
    scale = logit_scale.detach().float().requires_grad_()
    bias = logit_bias.detach().float().requires_grad_()
    total = torch.zeros((), dtype=torch.float64, device=images.device)
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        logits = scale * images[start:stop] @ all_texts.T + bias
        signs = _signs(start, stop, offset, all_texts.shape[0], images.device)
        part = -F.logsigmoid(signs * logits).sum() / rows
        part.backward()  # into images.grad, all_texts.grad, scale.grad, bias.grad
        total += part.detach().double()
    for source, leaf in ((logit_scale, scale), (logit_bias, bias)):
        if source.requires_grad:
            source.backward(leaf.grad.to(source.dtype))
    text_grad = all_texts.grad
    if distributed:
        dist.all_reduce(text_grad)  # every rank's rows met this rank's texts
    return total.float(), images.grad, text_grad[offset:offset + rows]
