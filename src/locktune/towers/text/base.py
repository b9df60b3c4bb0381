"""What every text tower provides: a tokenizer to fixed-length ids, and ids in, one vector per text out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from locktune.errors import LocktuneError
from locktune.registry import Registry
from locktune.towers.kinds import check_tower_name, split_kind


@dataclass
class TextTowerArgs:
    """Everything a text-tower builder may need.  `corpus` (training captions) lets a from-scratch tower
    train its own tokenizer; `tokenizer_json` restores a saved one instead."""

    pretrained: bool
    max_len: int
    width: int = 256
    layers: int = 4
    heads: int = 4
    vocab_size: int = 8000
    corpus: Callable[[], Iterable[str]] | None = None
    tokenizer_json: str | None = None
    pool: str = "auto"  # `KIND:SPEC` towers: how the text vector is pooled (model.text_pool)
    saved: Path | None = None  # `KIND:SPEC` towers: a saved model's folder to rebuild the architecture from


def trim_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop trailing columns that are padding in every row: exact for masked pooling and causal
    end-of-text pooling, and short captions then cost little (a training step and the text cache both trim)."""
    length = max(1, int(mask.sum(1).max()))
    return ids[:, :length], mask[:, :length]


def encodable(texts: Iterable[str]) -> list[str]:
    """Texts a Rust tokenizer accepts: lone surrogates (from `surrogateescape` decoding of non-UTF-8 bytes)
    cannot be encoded as UTF-8, so they become U+FFFD instead of raising mid-batch."""
    return [text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for text in texts]


def check_from_scratch_args(name: str, args: TextTowerArgs) -> None:
    """The checks every from-scratch text tower (sized by model.text_*) makes before building."""
    if args.pretrained:
        raise LocktuneError(f"text tower '{name}' has no pretrained weights (none ship offline); use the letter "
                            "'u' for it (e.g. setting 'Lu'), or a pretrained text tower such as 'minilm' for 'U'/'L'")
    if args.width % args.heads:
        raise LocktuneError(f"model.text_width ({args.width}) must be divisible by model.text_heads ({args.heads})")


class TextTower(nn.Module):
    name: str = "text_tower"
    output_dim: int
    max_len: int

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """-> {"ids": LongTensor[B, max_len], "mask": LongTensor[B, max_len]} (mask 1 on real tokens)."""
        raise NotImplementedError

    def tokenizer_json(self) -> str | None:
        """The tokenizer as JSON when it is not recoverable from a package (from-scratch vocabularies)."""
        return None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def enable_grad_checkpointing(self) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them
        (`train.grad_checkpointing`): memory for time, the same gradients (dropout masks are replayed)."""
        from locktune.errors import LocktuneError

        raise LocktuneError(f"train.grad_checkpointing: the text tower '{self.name}' does not support it; use an "
                            "hf: tower, minilm, t5 or clip, or set train.grad_checkpointing=false")


    def save_architecture(self, folder: Path) -> dict:
        """Write what rebuilds this tower offline (tokenizer, architecture config) into `folder`; weights are
        saved with the rest of the model.  Towers that save a tokenizer JSON instead return {}."""
        return {}


TEXT_TOWERS: Registry[Callable[[TextTowerArgs], TextTower]] = Registry("text tower")
TEXT_TOWER_KINDS: Registry[Callable[[str, TextTowerArgs], TextTower]] = Registry("text tower kind")


def check_text_tower_name(name: str) -> None:
    check_tower_name(name, "text", TEXT_TOWERS, TEXT_TOWER_KINDS, "hf:xlm-roberta-base")


def build_text_tower(name: str, args: TextTowerArgs) -> TextTower:
    """A bundled tower by name, or a `KIND:SPEC` tower (e.g. `hf:bert-base-uncased`)."""
    check_text_tower_name(name)
    kind, spec = split_kind(name)
    if kind is None:
        if args.pool != "auto":
            raise LocktuneError(f"model.text_pool '{args.pool}' does not apply to the bundled text tower '{name}'; "
                                "use auto (or hf:FOLDER to choose the pooling of a Hugging Face encoder)")
        return TEXT_TOWERS.get(name)(args)
    return TEXT_TOWER_KINDS.get(kind)(spec, args)
