"""What every text tower provides: a tokenizer to fixed-length ids, and ids in, one vector per text out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from locktune.errors import LocktuneError
from locktune.registry import Registry


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


def encodable(texts: Iterable[str]) -> list[str]:
    """Texts a Rust tokenizer accepts: lone surrogates (from `surrogateescape` decoding of non-UTF-8 bytes)
    cannot be encoded as UTF-8, so they become U+FFFD instead of raising mid-batch."""
    return [text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for text in texts]


def check_from_scratch_args(name: str, args: TextTowerArgs) -> None:
    """The checks every from-scratch text tower (sized by model.clip_*) makes before building."""
    if args.pretrained:
        raise LocktuneError(f"text tower '{name}' has no pretrained weights (none ship offline); use the letter "
                            "'u' for it (e.g. setting 'Lu'), or a pretrained text tower such as 'minilm' for 'U'/'L'")
    if args.width % args.heads:
        raise LocktuneError(f"model.clip_width ({args.width}) must be divisible by model.clip_heads ({args.heads})")


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


TEXT_TOWERS: Registry[Callable[[TextTowerArgs], TextTower]] = Registry("text tower")


def build_text_tower(name: str, args: TextTowerArgs) -> TextTower:
    return TEXT_TOWERS.get(name)(args)
