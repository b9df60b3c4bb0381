"""One training step's forward and backward, whole or through a gradient cache.

`whole_step`: one graph over this rank's batch.  `gradient_cached_step` (GradCache, Gao et al. 2021):
embed the batch without a graph, take the loss's gradient with respect to the embeddings in row chunks,
then rerun each chunk of the towers with a graph and backpropagate that chunk's slice of the gradient.
Memory is bounded by the chunk, not the batch.

When is the cached step equal to the whole step?  Given the same `chunk` and `seed`, `whole_step` runs the
towers chunk by chunk too (one graph), and both draw each chunk's dropout masks from a generator seeded
with (seed, first row of the chunk) on the CPU and on the batch's device (CUDA or any other), so the masks are the same
in both paths and in the cached step's replay; batch norm in a trained image tower sees each chunk's
statistics in both, and its running statistics are updated once per chunk (the no-graph pass restores
them).  The parameter gradients then differ by float rounding only (tests/test_step.py: relative error 2e-7 in
float32, bf16 autocast within the 1e-3 stated there).  The loss is computed in float32 outside autocast in both.
Without `chunk`, `whole_step` runs a model with dropout in seeded blocks of `train.dropout_rows` rows (one
graph), so a global row's masks do not depend on how many processes share the batch; without dropout, or with
`dropout_rows=0`, it runs the batch at once.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from locktune.loss import get_loss
from locktune.runtime import placement
from locktune.towers.text.base import trim_padding


@dataclass
class Batch:
    ids: torch.Tensor | None  # [b, max_len]; None when the text side is `text_features`
    mask: torch.Tensor | None  # [b, max_len]
    features: torch.Tensor | None = None  # cached image-tower outputs [b, d] (locked image tower)
    pixels: torch.Tensor | None = None  # [b, 3, H, W] otherwise
    text_features: torch.Tensor | None = None  # cached text-tower outputs [b, d_text] (locked text tower)

    def _sides(self) -> list[torch.Tensor]:
        return [t for t in (self.ids, self.text_features, self.features, self.pixels) if t is not None]

    def __len__(self) -> int:
        return self._sides()[0].shape[0]

    @property
    def device(self) -> torch.device:
        """Where the batch lives (the model's device): where its chunks' dropout generators are seeded."""
        return self._sides()[0].device

    def rows(self, start: int, stop: int) -> "Batch":
        pick = lambda t: None if t is None else t[start:stop]  # noqa: E731
        return Batch(pick(self.ids), pick(self.mask), pick(self.features), pick(self.pixels),
                     pick(self.text_features))


def embed(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.features is not None:
        image = model.embed_image_features(batch.features)
    else:
        image = model.encode_image(batch.pixels)
    return image, _text_side(model, batch)


def _text_side(model, batch: Batch) -> torch.Tensor:
    """The text embeddings: the head over cached tower outputs (a locked text tower, `cache/text_side.py`), or
    the tower run over the captions' tokens."""
    if batch.text_features is not None:
        return model.embed_text_features(batch.text_features)
    return model.encode_text(*trim_padding(batch.ids, batch.mask))


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, step, row): stable across processes and Python versions."""
    digest = hashlib.blake2b(":".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@contextmanager
def seeded_rng(seed: int, device: torch.device):
    """Inside: the CPU generator and, for an accelerator `device` (CUDA or any device with its own generator),
    that device's generator seeded with `seed`.  Outside, both are as they were (the global streams do not
    move)."""
    module = placement.device_module(device)
    if module is None:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    index = device.index if device.index is not None else module.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        torch.default_generator.manual_seed(seed)
        with module.device(index):
            module.manual_seed(seed)
        yield


def _resolve_seed(seed: int | None) -> int:
    # No seed given (benchmarks, direct callers): one draw from the global generator.
    return int(torch.randint(0, 2**62, (), dtype=torch.int64)) if seed is None else seed


def _embed_chunk(model, batch: Batch, start: int, chunk: int, autocast: AbstractContextManager, seed: int,
                 first_row: int) -> tuple[torch.Tensor, torch.Tensor]:
    with seeded_rng(mix_seed(seed, first_row + start), batch.device), autocast:
        return embed(model, batch.rows(start, start + chunk))


def _running_stats(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) for every running statistic a train-mode forward would update."""
    saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                if buffer is not None:
                    saved.append((buffer, buffer.clone()))
    return saved


def _loss(model, image: torch.Tensor, text: torch.Tensor, loss_name: str) -> torch.Tensor:
    """The named loss (`loss/`), in float32 outside autocast whatever the towers ran in."""
    with placement.full_precision(image.device):
        return get_loss(loss_name).whole(model, image.float(), text.float())


def has_active_dropout(model: nn.Module) -> bool:
    """Whether a forward in this mode draws dropout masks: a dropout module with p > 0 in training mode, or a
    Hugging Face model in training mode whose config asks for attention dropout (taken inside attention)."""
    for module in model.modules():
        if not module.training:
            continue
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return True
        config = getattr(module, "config", None)
        if config is not None and any(float(getattr(config, key, 0) or 0) > 0 for key in DROPOUT_CONFIG_KEYS):
            return True
    return False


DROPOUT_CONFIG_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "dropout_rate", "hidden_dropout_prob")


def whole_step(model, batch: Batch, autocast: AbstractContextManager, loss_name: str = "global", chunk: int = 0,
               seed: int | None = None, first_row: int = 0, dropout_rows: int = 0) -> torch.Tensor:
    """Forward and backward in one graph; the float32 loss, detached.  With `chunk`, the towers run chunk by
    chunk with seeded dropout exactly as in `gradient_cached_step` (the reference it must equal);
    `first_row` is this rank's first row in the global batch, so every rank seeds different rows.

    Without `chunk`, a tower that draws dropout masks runs in seeded blocks of `dropout_rows` rows (still one
    graph), so each global row's masks are the same whatever the number of processes (when `dropout_rows`
    divides each process's rows); a tower without dropout, or `dropout_rows=0`, runs the batch at once."""
    if chunk and chunk < len(batch):
        seed = _resolve_seed(seed)
        parts = [_embed_chunk(model, batch, start, chunk, autocast, seed, first_row)
                 for start in range(0, len(batch), chunk)]
        image, text = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    else:
        image, text = _embed_in_dropout_blocks(model, batch, autocast, seed, first_row, dropout_rows)
    loss = _loss(model, image, text, loss_name)
    loss.backward()
    return loss.detach()


def _embed_in_dropout_blocks(model, batch: Batch, autocast: AbstractContextManager, seed: int | None, first_row: int,
                             rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides' embeddings; a side whose tower or head draws dropout runs in seeded blocks of `rows` global rows,
    the other at once (a batch-norm image tower without dropout keeps the whole batch's statistics)."""
    def image_side(part: Batch) -> torch.Tensor:
        return model.embed_image_features(part.features) if part.features is not None else \
            model.encode_image(part.pixels)

    out = []
    # The text side's blocks are seeded as the gradient cache seeds its chunks, so with a locked image side (which
    # draws nothing) this step equals `gradient_cached_step` with chunk = rows; the image side's stream is apart.
    # What draws masks on each side: its tower when it runs (not read from a cache) and its head (an mlp head
    # may have dropout).
    image_parts = ([model.image_tower] if batch.features is None else []) + [model.image_projection]
    text_parts = ([model.text_tower] if batch.text_features is None else []) + [model.text_projection]
    for side, parts, salt in ((image_side, image_parts, (1,)), (lambda part: _text_side(model, part), text_parts, ())):
        if rows and any(has_active_dropout(part) for part in parts):
            seed = _resolve_seed(seed)
            blocks = []
            for start in range(0, len(batch), rows):
                with seeded_rng(mix_seed(seed, first_row + start, *salt), batch.device), autocast:
                    blocks.append(side(batch.rows(start, start + rows)))
            out.append(torch.cat(blocks))
        else:
            with autocast:
                out.append(side(batch))
    return out[0], out[1]


def gradient_cached_step(model, batch: Batch, autocast: AbstractContextManager, chunk: int,
                         loss_name: str = "global", seed: int | None = None, first_row: int = 0) -> torch.Tensor:
    """The gradients of `whole_step(..., chunk=chunk, seed=seed)` with memory bounded by the chunk."""
    seed = _resolve_seed(seed)
    starts = range(0, len(batch), chunk)
    running = _running_stats(model)
    with torch.no_grad():
        parts = [_embed_chunk(model, batch, start, chunk, autocast, seed, first_row) for start in starts]
    for buffer, before in running:  # the replay below updates them, once per chunk
        buffer.copy_(before)
    with placement.full_precision(batch.device):
        loss, image_grad, text_grad = get_loss(loss_name).grads(model, torch.cat([p[0].float() for p in parts]),
                                                                torch.cat([p[1].float() for p in parts]), chunk)
    del parts
    for start in starts:
        image, text = _embed_chunk(model, batch, start, chunk, autocast, seed, first_row)
        # An image side with nothing to train (locked or frozen tower and no head) has no graph.
        pairs = [(out.float(), grad[start:start + chunk]) for out, grad in ((image, image_grad), (text, text_grad))
                 if out.requires_grad]
        if pairs:
            torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
    return loss
