"""An mlp head with dropout draws its masks per block of global rows, as the towers do (`train.dropout_rows`):
a row gets the same mask whether one process holds the whole batch or two hold a half each."""

import contextlib

import torch

from tests.tiny_configs import tiny_run


def test_head_dropout_masks_do_not_depend_on_how_the_batch_is_split(tmp_path):
    from locktune.model import build_model
    from locktune.train.step import Batch, _embed_in_dropout_blocks

    config = tiny_run(tmp_path)
    config.model.text_head, config.model.head_mlp_dropout = "mlp", 0.5
    captions = [f"caption {i}" for i in range(8)]
    model = build_model(config.model, corpus=lambda: iter(captions), seed=0).train()
    tokens = model.tokenize(captions)
    batch = Batch(tokens["ids"], tokens["mask"], features=torch.randn(8, 1280))
    whole = _embed_in_dropout_blocks(model, batch, contextlib.nullcontext(), seed=5, first_row=0, rows=4)[1]
    halves = [_embed_in_dropout_blocks(model, batch.rows(s, s + 4), contextlib.nullcontext(), seed=5, first_row=s,
                                       rows=4)[1] for s in (0, 4)]
    assert torch.equal(whole, torch.cat(halves))
    again = _embed_in_dropout_blocks(model, batch, contextlib.nullcontext(), seed=6, first_row=0, rows=4)[1]
    assert not torch.equal(whole, again)  # dropout is on: another seed draws other masks
