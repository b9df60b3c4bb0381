"""The contrastive loss against a float64 computation written out term by term."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from locktune.loss import contrastive_loss


def reference_loss(img: np.ndarray, txt: np.ndarray, scale: float) -> float:
    """Symmetric InfoNCE in float64 with explicit sums: -log softmax of each positive, both directions."""
    n = img.shape[0]
    sims = [[scale * float(np.dot(img[i], txt[j])) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        row = sims[i]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        col = [sims[j][i] for j in range(n)]
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return total / (2 * n)


def test_loss_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1)
    for scale in (1.0, 10.0, 57.3):
        got = contrastive_loss(img.float(), txt.float(), torch.tensor(scale))
        assert abs(float(got) - reference_loss(img.numpy(), txt.numpy(), scale)) < 1e-5


def test_perfectly_aligned_pairs_have_low_loss_and_chance_pairs_log_n():
    emb = torch.eye(4)
    assert float(contrastive_loss(emb, emb, torch.tensor(100.0))) < 1e-6
    # Identical vectors everywhere: every candidate equally likely -> log(n).
    same = F.normalize(torch.ones(4, 3), dim=-1)
    assert abs(float(contrastive_loss(same, same, torch.tensor(10.0))) - math.log(4)) < 1e-6


def test_gradient_matches_float64_autograd():
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1)
    scale = torch.tensor(10.0, dtype=torch.float64)
    logits = scale * img @ txt.T
    labels = torch.arange(6)
    ref = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    (ref_grad,) = torch.autograd.grad(ref, img)
    img32 = img.detach().float().requires_grad_()
    contrastive_loss(img32, txt.float(), scale.float()).backward()
    assert torch.allclose(img32.grad.double(), ref_grad, atol=1e-6)
