"""Dropout in the plain (unchunked) step belongs to global rows: a text tower with dropout trains to the same
losses and weights in one process and in two (real gloo processes), as the gradient-cached step does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hf_tiny import save_text
from test_distributed import _pairs, below_adam_eps, launch
from tiny_configs import tiny_run


@pytest.fixture(scope="module")
def dropout_bert(tmp_path_factory):
    """A tiny BERT with transformers' default dropout (hidden and attention 0.1)."""
    return save_text("bert", tmp_path_factory.mktemp("bert-dropout"))


def bert_run(run_dir, bert, dropout_rows: int):
    config = tiny_run(run_dir, steps=3, train={"dropout_rows": dropout_rows})
    config.model.setting, config.model.text_tower = "LU", f"hf:{bert}"
    return config


def test_dropout_blocks_draw_each_global_rows_masks_whatever_the_rows_around_them(dropout_bert):
    """Rows 8..15 embedded as the second half of a 16-row batch, and as a rank's own 8 rows starting at global
    row 8: the same dropout masks, hence the same embeddings."""
    from contextlib import nullcontext

    from locktune.model.two_tower import build_model
    from locktune.towers.setting import unwrap
    from locktune.train.step import Batch, _embed_in_dropout_blocks, has_active_dropout

    model = build_model(bert_run("unused", dropout_bert, 4).model)
    model.train()
    assert has_active_dropout(model)
    tokens = model.tokenize([f"a photo of {w}" for w in "abcdefghijklmnop"])
    features = torch.randn(16, unwrap(model.image_tower).output_dim)
    batch = Batch(tokens["ids"], tokens["mask"], features=features)
    whole = _embed_in_dropout_blocks(model, batch, nullcontext(), 7, 0, 4)[1]
    half = batch.rows(8, 16)
    rank_one = _embed_in_dropout_blocks(model, half, nullcontext(), 7, 8, 4)[1]
    assert torch.equal(whole[8:], rank_one)
    other_seed = _embed_in_dropout_blocks(model, half, nullcontext(), 8, 8, 4)[1]
    assert (other_seed - rank_one).abs().max() > 1e-3  # dropout is on: another seed moves the embeddings


def _rank_train(rank, tmp_path, bert):
    from locktune.train.trainer import train

    result = train(bert_run(os.path.join(tmp_path, "two"), bert, 4), pairs=_pairs())
    if rank == 0:
        Path(tmp_path, "two.json").write_text(json.dumps(result.losses))
        torch.save(result.model.state_dict(), Path(tmp_path, "two_state.pt"))


@pytest.mark.slow  # ~17 s: two real processes
def test_one_and_two_processes_agree_with_dropout_in_the_plain_step(tmp_path, dropout_bert):
    from locktune.train.trainer import train

    one = train(bert_run(tmp_path / "one", dropout_bert, 4), pairs=_pairs())
    launch(_rank_train, tmp_path, str(dropout_bert))
    two_losses = json.loads((tmp_path / "two.json").read_text())
    two_state = torch.load(tmp_path / "two_state.pt", weights_only=True)
    assert max(abs(a - b) for a, b in zip(one.losses, two_losses)) < 1e-5, (one.losses, two_losses)
    noise = below_adam_eps(tmp_path / "one")
    for name, value in one.model.state_dict().items():
        close = torch.isclose(value, two_state[name], atol=1e-5)
        if name in noise:
            close |= noise[name]
        assert bool(close.all()), name
    # The masks matter: the batch at once (dropout_rows=0) draws other masks and another first loss.
    at_once = train(bert_run(tmp_path / "at_once", dropout_bert, 0), pairs=_pairs())
    assert abs(at_once.losses[0] - one.losses[0]) > 1e-3


def test_plain_step_in_dropout_blocks_equals_the_gradient_cache_with_chunks_of_that_size(dropout_bert):
    """Locked image side (cached features, no dropout there): the plain step's text blocks are seeded as the
    gradient cache's chunks, so their parameter gradients agree to float rounding."""
    from contextlib import nullcontext

    from locktune.model.two_tower import build_model
    from locktune.towers.setting import unwrap
    from locktune.train.step import Batch, gradient_cached_step, whole_step

    model = build_model(bert_run("unused", dropout_bert, 4).model)
    model.train()
    tokens = model.tokenize([f"a photo of {w} {w}" * (i % 3 + 1) for i, w in enumerate("abcdefghijklmnop")])
    batch = Batch(tokens["ids"], tokens["mask"], features=torch.randn(16, unwrap(model.image_tower).output_dim))
    grads = []
    for step in (lambda: whole_step(model, batch, nullcontext(), seed=5, dropout_rows=4),
                 lambda: gradient_cached_step(model, batch, nullcontext(), 4, seed=5)):
        model.zero_grad(set_to_none=True)
        step()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-4, atol=1e-7), name
