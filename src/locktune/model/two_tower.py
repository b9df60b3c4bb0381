"""The LiT model: an image tower and a text tower, each projected to a shared space, and a temperature.

With `image_head: none` the image tower has no projection: its normalised output is the shared space.

It only wires parts chosen by name; what a tower letter means is decided in `towers.setting`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from locktune.config import ModelConfig
from locktune.loss import DEFAULT_LOSS, get_loss
from locktune.model.heads import build_head, draw_head, head_reads
from locktune.towers.image import build_image_tower
from locktune.towers.image.preprocess import Preprocess
from locktune.towers.setting import apply_letter, is_pretrained, parse_setting, unwrap
from locktune.towers.text import build_text_tower
from locktune.towers.text.base import TextTowerArgs


class TwoTower(nn.Module):
    def __init__(self, config: ModelConfig, image_tower: nn.Module, text_tower: nn.Module, loss: str = DEFAULT_LOSS):
        super().__init__()
        self.config = config
        self.loss = loss  # the training loss (`train.loss`): what its similarities mean at use time
        self.precision = "fp32"  # what the towers run in (`train.precision`; training sets it): the image cache's too
        self.setting = parse_setting(config.setting)
        self.image_tower = image_tower
        self.text_tower = text_tower
        # The heads by name (`model/heads.py`), kept under these two names whatever they are, so a linear head's
        # state keys (`image_projection.weight`) are those of every model locktune ever saved.  The image head
        # decides the shared space's width: model.embed_dim, or with no head (`none`) the tower's own output.
        self.image_projection = _image_head(config, unwrap(image_tower))
        self.embed_dim = self.image_projection.out_dim
        self.text_projection = build_head(config.text_head, unwrap(text_tower).output_dim, self.embed_dim, config,
                                          side="text")
        # Learned log of the logit scale (1/temperature), initialised to log(logit_scale_init).
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        # The sigmoid loss's learned bias b in sigmoid(t * cos + b); softmax models have none (nor its state key).
        self.logit_bias = (nn.Parameter(torch.tensor(float(config.logit_bias_init))) if get_loss(loss).learns_bias
                           else None)
        self.preprocess: Preprocess = unwrap(image_tower).preprocess(config.image_size)

    @torch.no_grad()
    def init_heads(self, seed: int) -> None:
        """Draw both heads again from generators of their own, seeded from `seed` (the run's seed):
        the towers draw their initial weights from the global generator, and how much they draw depends on
        the setting (a from-scratch tower draws, a pretrained one does not), so heads drawn from it would
        differ between arms run with the same seed.  Seeded here, every arm with the same seed starts from the
        same heads wherever the shapes agree (paired seeds).  Same distributions as PyTorch's defaults
        (`heads.draw_head`); a linear head draws exactly what it always drew."""
        for salt, head in ((0, self.image_projection), (1, self.text_projection)):
            draw_head(head, torch.Generator().manual_seed(head_seed(seed, salt)))

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep the learned log-scale at or below log(logit_scale_max) in parameter space, after each optimizer
        step: clamped only in the forward pass, a parameter that overshoots gets no gradient and never returns.
        The sigmoid loss's bias likewise stays within +-logit_scale_max (|t * cos| never exceeds it)."""
        self.log_logit_scale.clamp_(max=math.log(self.config.logit_scale_max))
        if self.logit_bias is not None:
            self.logit_bias.clamp_(-self.config.logit_scale_max, self.config.logit_scale_max)

    @property
    def scale(self) -> torch.Tensor:
        """The multiplier of cosine similarities in the loss (1 / temperature): exp of the learned log scale,
        capped at logit_scale_max.  Not called `logit_scale`: in open_clip and the public API that name is the
        log (`LitModel.logit_scale`)."""
        return self.log_logit_scale.clamp(max=math.log(self.config.logit_scale_max)).exp()

    @property
    def device(self) -> torch.device:
        """Where the model lives: inputs given on another device are moved here, outputs stay here."""
        return self.log_logit_scale.device

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the image head reads: the tower's pooled output (what the embedding cache stores for a locked
        tower), or its tokens [b, T, D] for a head that reads tokens (`blocks:N`; the token cache's rows)."""
        pixels = pixels.to(self.device, non_blocking=True)
        if getattr(self.image_projection, "reads", "pooled") == "tokens":
            return self.image_tower.tokens(pixels)
        return self.image_tower(pixels)

    def embed_image_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_projection(features.to(self.device, non_blocking=True).float()), dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embed_image_features(self.image_features(pixels))

    def embed_text_features(self, features: torch.Tensor) -> torch.Tensor:
        """The text head over the text tower's outputs: what `encode_text` applies to the tower it runs, and
        what training applies to a locked tower's outputs read from the text cache (`cache/text_side.py`)."""
        return F.normalize(self.text_projection(features.to(self.device, non_blocking=True).float()), dim=-1)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
        return self.embed_text_features(self.text_tower(ids, mask))

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return unwrap(self.text_tower).tokenize(texts)


def _image_head(config: ModelConfig, tower: nn.Module) -> nn.Module:
    """The image head: it reads the tower's pooled output, or its tokens (`blocks:N`, fitted to the tower)."""
    tokens = head_reads(config.image_head) == "tokens"
    width = tower.token_dim if tokens else tower.output_dim
    head = build_head(config.image_head, width, config.embed_dim, config, side="image")
    if tokens:
        head.bind_tower(tower)
    return head


def head_seed(seed: int, salt: int) -> int:
    """The seed of one head's generator: a stable mix of the run seed, a fixed tag and the head (0 image,
    1 text), so the heads' draws are unrelated to any other stream the run seeds from `seed`."""
    digest = hashlib.blake2b(f"locktune-heads:{int(seed)}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def text_tower_args(config: ModelConfig, pretrained: bool, **extra) -> TextTowerArgs:
    """The text tower's arguments from the model config (`extra`: corpus, tokenizer_json, saved)."""
    return TextTowerArgs(pretrained=pretrained, max_len=config.max_text_len, width=config.text_width,
                         layers=config.text_layers, heads=config.text_heads, vocab_size=config.text_vocab_size,
                         pool=config.text_pool, **extra)


def build_model(config: ModelConfig, corpus: Callable[[], Iterable[str]] | None = None,
                tokenizer_json: str | None = None, loss: str = DEFAULT_LOSS, seed: int | None = None) -> TwoTower:
    """Build both towers from their names and letters.  `corpus` feeds a from-scratch tokenizer; `loss`
    (`train.loss`) adds the parameters that loss learns beside the temperature; `seed` (training passes
    `train.seed`) draws the heads from their own generators (`TwoTower.init_heads`)."""
    setting = parse_setting(config.setting)
    image = build_image_tower(config.image_tower, pretrained=is_pretrained(setting.image), pool=config.image_pool)
    text = build_text_tower(config.text_tower, text_tower_args(config, is_pretrained(setting.text), corpus=corpus,
                                                              tokenizer_json=tokenizer_json))
    model = TwoTower(config, apply_letter(image, setting.image), apply_letter(text, setting.text), loss=loss)
    if seed is not None:
        model.init_heads(seed)
    return model
