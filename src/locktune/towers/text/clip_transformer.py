"""A CLIP-style text transformer trained from scratch, with a byte-level BPE vocabulary of its own.

Causal pre-LayerNorm blocks with scaled-dot-product attention; the text vector is the final hidden
state at the end-of-text token, as in CLIP.  There are no pretrained weights: the only valid letter is
`u`.  The tokenizer is trained on the training captions (seconds) and saved with the model.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import nn

from locktune.towers.text.base import TEXT_TOWERS, TextTower, TextTowerArgs, check_from_scratch_args
from locktune.towers.text.vocab import fixed_length_ids, own_tokenizer, train_bpe_tokenizer

PAD, SOS, EOS = "[PAD]", "[SOS]", "[EOS]"


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.ln2(x))


class ClipTextTower(TextTower):
    name = "clip"

    def __init__(self, args: TextTowerArgs):
        super().__init__()
        check_from_scratch_args(self.name, args)
        self.bpe = own_tokenizer(args, "clip", lambda texts, size: train_bpe_tokenizer(texts, size, [PAD, SOS, EOS]))
        self.max_len = args.max_len
        self.output_dim = args.width
        self.pad_id, self.sos_id, self.eos_id = (self.bpe.token_to_id(t) for t in (PAD, SOS, EOS))
        self.token_embedding = nn.Embedding(self.bpe.get_vocab_size(), args.width)
        self.position_embedding = nn.Parameter(torch.empty(args.max_len, args.width))
        self.blocks = nn.ModuleList(_Block(args.width, args.heads) for _ in range(args.layers))
        self.ln_final = nn.LayerNorm(args.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)

    def tokenizer_json(self) -> str:
        return self.bpe.to_str()

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return fixed_length_ids(self.bpe, texts, self.max_len, self.pad_id, [self.sos_id], [self.eos_id])

    checkpointing = False

    def enable_grad_checkpointing(self) -> None:
        self.checkpointing = True

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        for block in self.blocks:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.ln_final(x)
        # Causal attention: the end-of-text token has seen the whole caption and no padding.
        eos_position = mask.sum(1) - 1
        return x[torch.arange(x.shape[0], device=x.device), eos_position]


TEXT_TOWERS.register("clip")(ClipTextTower)
