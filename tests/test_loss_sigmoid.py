"""The sigmoid pairwise loss (SigLIP) against a float64 computation written out from the paper's formula,
pair by pair: the loss and every gradient (image and text embeddings, log-temperature, bias), taken whole
and in chunks.  Two processes: tests/test_distributed.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from locktune.loss import label_probabilities, sigmoid_loss, sigmoid_loss_grads


def _log_sigmoid(x: float) -> float:
    return -(max(0.0, -x) + math.log1p(math.exp(-abs(x))))


def _sigmoid(x: float) -> float:
    return math.exp(_log_sigmoid(x))


def reference(img: np.ndarray, txt: np.ndarray, log_scale: float, bias: float) -> dict:
    """loss = -(1/n) sum_i sum_j log sigmoid(z_ij (t cos_ij + b)), z = +1 on the diagonal, -1 elsewhere, t = exp(t').

    Gradients from d/dx [-log sigmoid(x)] = -sigmoid(-x), with x = z (t cos + b), cos_ij = <img_i, txt_j>.
    """
    n, t = img.shape[0], math.exp(log_scale)
    out = {"loss": 0.0, "image": np.zeros_like(img), "text": np.zeros_like(txt), "log_scale": 0.0, "bias": 0.0}
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            cos = float(np.dot(img[i], txt[j]))
            x = z * (t * cos + bias)
            out["loss"] -= _log_sigmoid(x) / n
            d = -z * _sigmoid(-x) / n  # d loss / d (t cos + b) for this pair
            out["image"][i] += d * t * txt[j]
            out["text"][j] += d * t * img[i]
            out["log_scale"] += d * t * cos  # dt/dt' = t
            out["bias"] += d
    return out


def embeddings(n: int = 7, dim: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    # Texts near their images, so positives and negatives both matter.
    txt = F.normalize(img + 0.8 * torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    return img.numpy(), txt.numpy()


SETTINGS = [(math.log(10.0), -10.0), (0.0, 0.0), (math.log(30.0), 4.0), (math.log(3.0), -2.5)]


def test_reference_gradients_are_the_derivatives_of_the_reference_loss():
    """The hand-derived reference gradients against central differences of the reference loss."""
    img, txt = embeddings()
    log_scale, bias, h = math.log(7.0), -3.0, 1e-6
    ref = reference(img, txt, log_scale, bias)

    def loss(i=img, t=txt, s=log_scale, b=bias) -> float:
        return reference(i, t, s, b)["loss"]

    assert ref["log_scale"] == pytest.approx((loss(s=log_scale + h) - loss(s=log_scale - h)) / (2 * h), abs=1e-7)
    assert ref["bias"] == pytest.approx((loss(b=bias + h) - loss(b=bias - h)) / (2 * h), abs=1e-7)
    for which, array in (("image", img), ("text", txt)):
        up, down = array.copy(), array.copy()
        up[2, 3] += h
        down[2, 3] -= h
        slope = ((loss(i=up) - loss(i=down)) if which == "image" else (loss(t=up) - loss(t=down))) / (2 * h)
        assert ref[which][2, 3] == pytest.approx(slope, abs=1e-7)


def _whole(img: np.ndarray, txt: np.ndarray, log_scale: float, bias: float) -> dict:
    i = torch.tensor(img, dtype=torch.float32, requires_grad=True)
    t = torch.tensor(txt, dtype=torch.float32, requires_grad=True)
    s = torch.tensor(log_scale, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    loss = sigmoid_loss(i, t, s.exp(), b)
    loss.backward()
    return {"loss": float(loss.detach()), "image": i.grad, "text": t.grad, "log_scale": float(s.grad), "bias": float(b.grad)}


def _chunked(img: np.ndarray, txt: np.ndarray, log_scale: float, bias: float, chunk: int) -> dict:
    s = torch.tensor(log_scale, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    as32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    loss, g_img, g_txt = sigmoid_loss_grads(as32(img), as32(txt), s.exp(), b, chunk_rows=chunk)
    return {"loss": float(loss), "image": g_img, "text": g_txt, "log_scale": float(s.grad), "bias": float(b.grad)}


def assert_matches(got: dict, ref: dict, tol: float = 1e-5) -> None:
    assert got["loss"] == pytest.approx(ref["loss"], abs=tol * max(1.0, abs(ref["loss"])))
    for key in ("log_scale", "bias"):
        assert got[key] == pytest.approx(ref[key], abs=tol), key
    for key in ("image", "text"):
        np.testing.assert_allclose(got[key].double().numpy(), ref[key], atol=tol, err_msg=key)


@pytest.mark.parametrize("log_scale,bias", SETTINGS)
def test_whole_loss_and_gradients_match_the_float64_formula(log_scale, bias):
    img, txt = embeddings()
    assert_matches(_whole(img, txt, log_scale, bias), reference(img, txt, log_scale, bias))


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
@pytest.mark.parametrize("log_scale,bias", SETTINGS[:2])
def test_chunked_loss_and_gradients_match_the_float64_formula(chunk, log_scale, bias):
    img, txt = embeddings()
    assert_matches(_chunked(img, txt, log_scale, bias, chunk), reference(img, txt, log_scale, bias))


def test_known_values():
    """Aligned pairs at the paper's initialisation (t = 10, b = -10): each positive sits at x = 0 (log 2),
    each of the n - 1 negatives per row at x = 10."""
    n = 4
    emb = torch.eye(n)
    got = float(sigmoid_loss(emb, emb, torch.tensor(10.0), torch.tensor(-10.0)))
    assert got == pytest.approx(math.log(2) + (n - 1) * math.log1p(math.exp(-10)), abs=1e-6)
    # Normalised per image row (by n), not per pair (by n^2): doubling the batch of such pairs barely moves it.
    got8 = float(sigmoid_loss(torch.eye(8), torch.eye(8), torch.tensor(10.0), torch.tensor(-10.0)))
    assert got8 == pytest.approx(math.log(2) + 7 * math.log1p(math.exp(-10)), abs=1e-6)


def test_sigmoid_scores_are_independent_per_label():
    sims = np.array([[0.9, 0.1, -0.3], [0.95, 0.92, 0.1]])
    got = label_probabilities(sims, "sigmoid", 10.0, -5.0)
    expected = [[1 / (1 + math.exp(-(10 * c - 5))) for c in row] for row in sims]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[1].sum() > 1.5  # two labels may both match; nothing makes them share
    softmax = label_probabilities(sims, "global", 10.0)
    np.testing.assert_allclose(softmax.sum(1), 1.0, atol=1e-6)
    expected = np.exp(10 * sims[0]) / np.exp(10 * sims[0]).sum()
    np.testing.assert_allclose(softmax[0], expected, atol=1e-6)


def confident_embeddings(n: int = 6) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Pairs whose positives sit at logits 10..30 and whose negatives are far below (x ~ -75), so every
    gradient row is the positive's own term, -sigmoid(-x) ~ -exp(-x): any precision lost on it shows.
    Images are a regular simplex (pairwise cos -1/(n-1)); text j is image j tilted towards the all-ones axis,
    which is orthogonal to every image."""
    img = np.eye(n) - 1.0 / n
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    cos = np.linspace(0.7, 0.9, n)  # t * cos + b from 10 to 30 with t = 100, b = -60
    txt = cos[:, None] * img + np.sqrt(1 - cos ** 2)[:, None] * np.ones(n) / math.sqrt(n)
    return img, txt, math.log(100.0), -60.0


@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_gradient_of_confident_positives_matches_float64(chunk):
    """The issue's case: `sigmoid(x) - 1` in float32 had relative error 4.5e-4 at x = 10 and 1.0 from ~18 on."""
    img, txt, log_scale, bias = confident_embeddings()
    ref = reference(img, txt, log_scale, bias)
    got = _chunked(img, txt, log_scale, bias, chunk)
    positive_x = 100.0 * np.einsum("ij,ij->i", img, txt) - 60.0
    assert positive_x.min() == pytest.approx(10.0) and positive_x.max() == pytest.approx(30.0)
    for key in ("image", "text"):
        grad = got[key].double().numpy()
        scale = np.abs(ref[key]).max(axis=1)
        assert (scale > 0).all() and scale.min() < 1e-11  # t * e^-30 / n: tiny
        relative = np.abs(grad - ref[key]).max(axis=1) / scale
        # float32 cosines carry ~6e-8 relative error, which t = 100 turns into ~1e-5 of exp(-x): the floor.
        assert relative.max() < 1e-4, (key, relative)
    assert got["bias"] == pytest.approx(ref["bias"], rel=1e-5)
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5)
