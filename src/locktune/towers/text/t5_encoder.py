"""A T5-encoder-style text tower trained from scratch, with a SentencePiece-style Unigram vocabulary of its own.

The architecture is transformers' T5 encoder in its v1.1 form: relative position buckets, RMS norm,
gated-GELU feed-forward, no dropout.  The text vector is the mean of the last hidden states over real
tokens (LiT's T5 text towers pool the same way).  No pretrained T5 weights ship offline, so the only
valid letter is `u`.  It is sized by the same `model.clip_*` keys as the CLIP-style tower, so the two
compare at equal width, depth, heads and vocabulary.
"""

from __future__ import annotations

import torch

from locktune.towers.hf_common import plain_mode_switch
from locktune.towers.text.base import TEXT_TOWERS, TextTower, TextTowerArgs, check_from_scratch_args
from locktune.towers.text.vocab import fixed_length_ids, own_tokenizer, train_unigram_tokenizer

# T5's own special tokens, in T5's order (pad 0, eos 1, unk 2).
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def t5_config(width: int, layers: int, heads: int, vocab_size: int, pad_id: int, eos_id: int):
    """T5 v1.1's shape rules at a given width: d_kv = width / heads, and a gated feed-forward of 8/3 x width
    (v1.1 base: 768 -> 2048), which holds as many weights as a plain 4 x width MLP."""
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, d_model=width, d_kv=width // heads, d_ff=(8 * width) // 3,
                    num_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                    layer_norm_epsilon=1e-6, pad_token_id=pad_id, eos_token_id=eos_id,
                    decoder_start_token_id=pad_id, use_cache=False, is_encoder_decoder=False)


class T5EncoderTower(TextTower):
    name = "t5_encoder"

    def __init__(self, args: TextTowerArgs):
        super().__init__()
        check_from_scratch_args(self.name, args)
        from transformers import T5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.sentencepiece = own_tokenizer(
            args, self.name, lambda texts, size: train_unigram_tokenizer(texts, size, [PAD, EOS, UNK], UNK))
        self.max_len = args.max_len
        self.output_dim = args.width
        self.pad_id, self.eos_id = self.sentencepiece.token_to_id(PAD), self.sentencepiece.token_to_id(EOS)
        config = t5_config(args.width, args.layers, args.heads, self.sentencepiece.get_vocab_size(), self.pad_id,
                           self.eos_id)
        # T5EncoderModel's only addition to its encoder stack is a second name (`shared`) for the same
        # embedding; a tensor saved under two names is one safetensors refuses, so keep the stack alone.
        self.encoder = plain_mode_switch(T5EncoderModel(config).encoder)

    def tokenizer_json(self) -> str:
        return self.sentencepiece.to_str()

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # T5 appends </s> and has no start token.
        return fixed_length_ids(self.sentencepiece, texts, self.max_len, self.pad_id, [], [self.eos_id])

    def enable_grad_checkpointing(self) -> None:
        self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


TEXT_TOWERS.register("t5_encoder")(T5EncoderTower)
