"""`blocks:N` image heads: N trainable transformer blocks over a locked image tower's token outputs (dino.txt).

dino.txt (Jose et al., CVPR 2025) keeps DINOv2 frozen and trains two transformer blocks on its patch tokens; the
image embedding is the blocks' class token concatenated with the mean of their patch tokens.  Here:

    tokens [b, T, in_dim]  --(linear to model.head_blocks_width, when it is set and differs)-->
    [learned class token prepended when the tower's token 0 is none (CNN feature maps, SigLIP)]
    N pre-LN blocks: x + attention(LN(x)), then x + MLP(LN(x))   (heads: model.head_blocks_heads)
    final LayerNorm, then cls+mean: [x_0, mean(x_1..)]  [b, 2 * width]
    linear map (no bias) to out_dim

No position embedding is added: a ViT's tokens carry their positions from the tower already; a CNN's feature
map positions are pooled by the mean as the tower's own head pools them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from locktune.errors import LocktuneError

# Rows a head runs at once outside autograd (evaluation over a whole benchmark's tokens): attention's memory
# grows with rows x T^2, so a 10,000-image set is embedded in slices.
INFERENCE_ROWS = 256


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """nn.Linear's own default initialisation, drawn from `generator`."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        bound = 1 / math.sqrt(layer.in_features)
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class Block(nn.Module):
    """One pre-LN transformer block (ViT / DINOv2 layout): width `width`, `heads` attention heads."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = max(1, int(round(width * mlp_ratio)))
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # [b, heads, t, w / heads]
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, w))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    def init_weights(self, generator: torch.Generator) -> None:
        for layer in (self.qkv, self.proj, self.fc1, self.fc2):
            _init_linear(layer, generator)
        for norm in (self.norm1, self.norm2):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)


class TokenBlocksHead(nn.Module):
    """`blocks:N`: reads the image tower's tokens [b, T, in_dim], returns [b, out_dim] (not normalised)."""

    reads = "tokens"

    def __init__(self, in_dim: int, out_dim: int, n_blocks: int, config):
        super().__init__()
        if n_blocks < 1:
            raise LocktuneError(f"model.image_head 'blocks:{n_blocks}' needs at least one block (e.g. blocks:2)")
        width = int(getattr(config, "head_blocks_width", 0) or in_dim)
        heads = int(getattr(config, "head_blocks_heads", 0) or max(1, width // 64))
        if width % heads:
            raise LocktuneError(f"model.head_blocks_heads ({heads}) must divide the blocks' width ({width}: "
                                "model.head_blocks_width, or the tower's token width when 0)")
        self.in_dim, self.out_dim, self.width, self.n_blocks = in_dim, out_dim, width, n_blocks
        self.input = nn.Linear(in_dim, width) if width != in_dim else nn.Identity()
        self.blocks = nn.ModuleList(Block(width, heads, float(getattr(config, "head_blocks_mlp_ratio", 4.0)))
                                    for _ in range(n_blocks))
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(2 * width, out_dim, bias=False)
        # Set by `bind_tower`: a learned class token, only for towers whose token 0 is none (else no parameter,
        # so distributed training never meets a parameter without a gradient).
        self.cls_token: nn.Parameter | None = None

    def bind_tower(self, tower) -> None:
        """Fit the head to the tower it reads: its token width, and a learned class token where it has none."""
        if int(tower.token_dim) != self.in_dim:
            raise LocktuneError(f"blocks head built for {self.in_dim}-wide tokens, but image tower "
                                f"'{tower.name}' gives {tower.token_dim}")
        if not tower.has_cls_token and self.cls_token is None:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.width, device=self.output.weight.device))
            nn.init.normal_(self.cls_token, std=0.02)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """Draw every parameter from `generator` (paired seeds: `TwoTower.init_heads`), in a fixed order."""
        if isinstance(self.input, nn.Linear):
            _init_linear(self.input, generator)
        if self.cls_token is not None:
            self.cls_token.copy_(torch.randn(self.cls_token.shape, generator=generator) * 0.02)
        for block in self.blocks:
            block.init_weights(generator)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)
        _init_linear(self.output, generator)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The blocks' output pooled cls+mean: [b, 2 * width]."""
        x = self.input(tokens.to(self.output.weight.dtype))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return torch.cat([x[:, 0], x[:, 1:].mean(1)], dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:
            raise LocktuneError(f"a blocks:{self.n_blocks} head reads token outputs [batch, tokens, width], got a "
                                f"tensor of shape {tuple(tokens.shape)} (pooled features from another cache?)")
        if torch.is_grad_enabled() or len(tokens) <= INFERENCE_ROWS:
            return self.output(self.pooled(tokens))
        return torch.cat([self.output(self.pooled(part)) for part in tokens.split(INFERENCE_ROWS)])
