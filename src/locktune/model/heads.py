"""The trainable heads between a tower and the shared space, chosen by name per side (`model.image_head`,
`model.text_head`).

    linear     one linear map without bias to model.embed_dim (LiT; the default on both sides)
    none       no head: the image tower's normalised output is the shared space (image side only)
    mlp        pre-norm residual MLP blocks, then a norm and a linear map (FuseMix's adapter); with
               model.head_mlp_residual=false a plain MLP (hidden layers, then the output layer)
    blocks:N   N trainable transformer blocks over the locked image tower's tokens (dino.txt; image side only),
               built by `model/token_blocks.py`

Every head module tells what it reads from its tower (`reads`: "pooled" vector or "tokens") and how wide its
output is (`out_dim`).  The model keeps whatever head is built under the attribute names `image_projection` and
`text_projection`, so the state-dict keys of linear heads (`image_projection.weight`) never change.  The names
and their valid sides are listed in config.py (IMAGE_HEADS, TEXT_HEADS: checked at load, with the mlp options);
tests/test_heads.py keeps that list and this registry the same.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from locktune.errors import LocktuneError
from locktune.registry import Registry


@dataclass(frozen=True)
class HeadKind:
    """One head kind: its builder (in_dim, out_dim, count, model config) -> module, the sides it serves, whether
    its name carries a count (`blocks:N`) and what it reads from the tower."""

    build: Callable[[int, int, int | None, Any], nn.Module]
    sides: tuple[str, ...]
    counted: bool = False
    reads: str = "pooled"


HEADS: Registry[HeadKind] = Registry("head")


def parse_head_name(name: str) -> tuple[str, int | None]:
    """"linear" -> ("linear", None); "blocks:2" -> ("blocks", 2).  A kind that takes a count needs one of at least
    1; others take none."""
    kind, sep, count = str(name).partition(":")
    entry = HEADS.get(kind)  # an unknown kind: one line listing the valid names
    if entry.counted != bool(sep):
        form = f"{kind}:N (N at least 1)" if entry.counted else kind
        raise LocktuneError(f"head '{name}' should be written {form}")
    if not entry.counted:
        return kind, None
    if not count.isdigit() or int(count) < 1:
        raise LocktuneError(f"head '{name}': the count after '{kind}:' must be a whole number of at least 1")
    return kind, int(count)


def head_reads(name: str) -> str:
    """What the named head reads from its tower: "pooled" or "tokens"."""
    return HEADS.get(parse_head_name(name)[0]).reads


def build_head(name: str, in_dim: int, out_dim: int, config: Any, side: str = "image") -> nn.Module:
    """The head called `name` for `side` ("image" or "text"), from `in_dim` tower outputs to `out_dim`
    (`config`: the ModelConfig, for the kind's own options)."""
    kind, count = parse_head_name(name)
    entry = HEADS.get(kind)
    if side not in entry.sides:
        valid = ", ".join(n for n in HEADS.names() if side in HEADS.get(n).sides)
        raise LocktuneError(f"model.{side}_head '{name}' is for the {' and '.join(entry.sides)} side only; "
                            f"valid on the {side} side: {valid}")
    return entry.build(in_dim, out_dim, count, config)


@torch.no_grad()
def draw_head(head: nn.Module, generator: torch.Generator) -> None:
    """Draw a head's weights from `generator` alone (paired seeds: `TwoTower.init_heads`).  A head with its own
    rule (`init_weights(generator)`) follows it; otherwise every linear layer, in module order, gets nn.Linear's
    default distribution (weight U(+-1/sqrt(fan_in)) by kaiming_uniform(a=sqrt(5)), then its bias) and every
    layer norm the identity.  A bias-free linear head draws exactly what locktune always drew for it."""
    own = getattr(head, "init_weights", None)
    if own is not None:
        own(generator)
        return
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()


class LinearHead(nn.Linear):
    """LiT's head: a linear map without bias (an nn.Linear, so `.weight` and its state key stay as they were)."""

    reads = "pooled"

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim, bias=False)
        self.out_dim = out_dim


class IdentityHead(nn.Identity):
    """No head: the tower's output is the shared space (its width is the embedding's)."""

    reads = "pooled"

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise LocktuneError(f"model.head_mlp_activation '{name}' is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ResidualBlock(nn.Module):
    """x + W2 dropout(act(W1 LN(x))): a pre-norm residual MLP block at the input's width (FuseMix's adapter
    block), so a deep head starts close to the identity and the locked tower's features pass through."""

    def __init__(self, dim: int, width: int, act: str, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, width)
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.dropout(self.act(self.up(self.norm(x)))))


class MlpHead(nn.Module):
    """`depth` hidden layers of `width` (0: 4 x the input width, FuseMix's expansion factor) between a tower and
    the shared space.  residual: `depth` ResidualBlocks at the input width, then LayerNorm and a linear map with
    bias to out_dim (FuseMix).  Plain (residual off): Linear-act-dropout `depth` times, then the output layer
    (the projector of ShareLock and of LLaVA-style connectors)."""

    reads = "pooled"

    def __init__(self, in_dim: int, out_dim: int, depth: int = 1, width: int = 0, act: str = "gelu",
                 dropout: float = 0.0, residual: bool = True):
        super().__init__()
        if depth < 1:
            raise LocktuneError(f"model.head_mlp_depth must be at least 1, got {depth}")
        width = width or 4 * in_dim
        self.out_dim = out_dim
        if residual:
            layers = [ResidualBlock(in_dim, width, act, dropout) for _ in range(depth)]
            layers += [nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim)]
        else:
            layers, last = [], in_dim
            for _ in range(depth):
                layers += [nn.Linear(last, width), activation(act), nn.Dropout(dropout)]
                last = width
            layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _mlp(in_dim: int, out_dim: int, count: int | None, config: Any) -> nn.Module:
    return MlpHead(in_dim, out_dim, depth=config.head_mlp_depth, width=config.head_mlp_width,
                   act=config.head_mlp_activation, dropout=config.head_mlp_dropout,
                   residual=config.head_mlp_residual)


TOKEN_BLOCKS_MODULE = "locktune.model.token_blocks"


def _blocks(in_dim: int, out_dim: int, count: int | None, config: Any) -> nn.Module:
    # Imported when asked for: the token path is its own module (and its own helper's file).
    try:
        module = importlib.import_module(TOKEN_BLOCKS_MODULE)
    except ModuleNotFoundError as error:
        if error.name != TOKEN_BLOCKS_MODULE:
            raise
        raise LocktuneError(f"model.image_head 'blocks:{count}' needs {TOKEN_BLOCKS_MODULE}, which this locktune "
                            "does not have; use linear or mlp, or upgrade locktune") from None
    return module.TokenBlocksHead(in_dim, out_dim, count, config)


HEADS.register("linear")(HeadKind(lambda i, o, n, c: LinearHead(i, o), ("image", "text")))
HEADS.register("none")(HeadKind(lambda i, o, n, c: IdentityHead(i), ("image",)))
HEADS.register("mlp")(HeadKind(_mlp, ("image", "text")))
HEADS.register("blocks")(HeadKind(_blocks, ("image",), counted=True, reads="tokens"))


def head_names(side: str) -> list[str]:
    """The names valid on `side`, as config.py lists them ("blocks:N" for a counted kind)."""
    return [f"{n}:N" if HEADS.get(n).counted else n for n in HEADS.names() if side in HEADS.get(n).sides]
