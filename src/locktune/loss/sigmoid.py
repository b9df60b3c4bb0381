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
- `sigmoid_loss_grads`: the loss and its gradients with respect to the embeddings, written out and taken in
  row chunks (memory: three chunk x global-batch matrices, no graph), for the gradient cache; the scale's
  and bias's gradients go into their `.grad`.

Texts are gathered rather than passed around a ring: a global batch of 32,768 texts at 512 dimensions is
64 MiB, while the chunk's logits are what bound memory.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from locktune.loss.contrastive import _distributed, _gather_plain, gather_with_grad
from locktune.runtime.placement import full_precision


def _signs(start: int, stop: int, offset: int, columns: int, device) -> torch.Tensor:
    """z for image rows start..stop (of this rank, whose first row is global row `offset`) x all texts."""
    rows = torch.arange(start, stop, device=device)[:, None] + offset
    return torch.where(rows == torch.arange(columns, device=device)[None, :], 1.0, -1.0)


def sigmoid_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor, gather=gather_with_grad) -> torch.Tensor:
    """This rank's share of the pairwise sigmoid loss: its image rows against every text of the global batch.

    Embeddings are expected L2-normalised.  Computed in float32 even when called inside an autocast region
    (autocast is switched off here: under it the matmul would run in bf16).
    """
    with full_precision(image_emb.device):
        image_emb, text_emb = image_emb.float(), text_emb.float()
        all_texts, offset = gather(text_emb)
        logits = logit_scale.float() * image_emb @ all_texts.T + logit_bias.float()
        signs = _signs(0, image_emb.shape[0], offset, all_texts.shape[0], image_emb.device)
        return -F.logsigmoid(signs * logits).sum() / image_emb.shape[0]


def sigmoid_loss_grads(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                       logit_bias: torch.Tensor, chunk_rows: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, d loss/d image_emb, d loss/d text_emb) for this rank's embeddings, computed in row chunks.

    The same loss as `sigmoid_loss`, its gradients written out instead of taken by autograd, so a chunk
    holds three chunk_rows x global-batch matrices (cosines, logits turned in place into their gradient,
    softplus) and no graph.  With x = t * cos + b, a negative pair costs softplus(x) and a positive one
    softplus(-x); d/dx is sigmoid(x) for a negative and -sigmoid(-x) for a positive.  The gradients of the scale and the bias
    are accumulated through them into their parameters' `.grad`.
    """
    images = image_emb.detach().float()
    text_emb = text_emb.detach().float()
    distributed = _distributed()
    rows = images.shape[0]
    offset = dist.get_rank() * rows if distributed else 0
    all_texts = _gather_plain(text_emb) if distributed else text_emb
    t, b = float(logit_scale.detach()), float(logit_bias.detach())
    image_grad, text_grad = torch.empty_like(images), torch.zeros_like(all_texts)
    total, scale_grad, bias_grad = (torch.zeros((), dtype=torch.float64, device=images.device) for _ in range(3))
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        chunk = images[start:stop]
        cos = chunk @ all_texts.T
        logits = cos * t + b
        positives = slice(offset + start, offset + stop)  # image row r's text is column offset + r
        x_pos = logits[:, positives].diagonal().clone()
        # Each pair's cost, the positives' swapped for softplus(-x) in place before the sum (subtracting their
        # softplus(x) from a float32 total would lose the small costs of confident positives).
        cost = F.softplus(logits)
        cost[:, positives].diagonal().copy_(F.softplus(-x_pos))
        total += cost.sum(dtype=torch.float64) / rows
        del cost
        # d cost / d x: sigmoid(x) for a negative, -sigmoid(-x) for a positive (written so; sigmoid(x) - 1 in
        # float32 is 0 from x ~ 17 on, and loses digits well before).
        grad = logits.sigmoid_()
        grad[:, positives].diagonal().copy_(-torch.sigmoid(-x_pos))
        grad /= rows
        bias_grad += grad.sum(dtype=torch.float64)
        scale_grad += torch.dot(grad.reshape(-1), cos.reshape(-1)).double()
        torch.mm(grad, all_texts, out=image_grad[start:stop])
        text_grad.addmm_(grad.T, chunk)
    image_grad *= t
    text_grad *= t
    for source, grad in ((logit_scale, scale_grad), (logit_bias, bias_grad)):
        if source.requires_grad:
            source.backward(grad.to(source.dtype))
    if distributed:
        dist.all_reduce(text_grad)  # every rank's rows met this rank's texts
    return total.float(), image_grad, text_grad[offset:offset + rows]
