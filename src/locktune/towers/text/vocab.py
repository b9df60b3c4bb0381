"""Vocabularies the from-scratch text towers train on the captions, and fixed-length id batches from them.

A tower restores a saved vocabulary from its JSON (`TextTowerArgs.tokenizer_json`) or trains a new one on
the training captions (`TextTowerArgs.corpus`): training takes seconds, and the JSON is saved with the model.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from locktune.errors import LocktuneError
from locktune.towers.text.base import TextTowerArgs, encodable


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: list[str]):
    """CLIP-style: byte-level BPE over lowercased NFKC text, so any input has ids (no unknown token)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_unigram_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: list[str], unk_token: str):
    """T5-style: a SentencePiece Unigram model over cased NFKC text with `▁` marking word starts.
    Characters never seen in training become `unk_token`, as in T5."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special_tokens, unk_token=unk_token,
                                      show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # The JSON reader may round a piece's score one ulp away from the trained value; reading it once here
    # makes the tokenizer trained with exactly the one a saved model restores (scores decide tied splits).
    return Tokenizer.from_str(tokenizer.to_str())


def own_tokenizer(args: TextTowerArgs, tower: str, train: Callable[[Iterable[str], int], object]):
    """The saved vocabulary when `args` carries one, else `train(captions, vocab_size)`."""
    from tokenizers import Tokenizer

    if args.tokenizer_json is not None:
        return Tokenizer.from_str(args.tokenizer_json)
    if args.corpus is not None:
        return train(args.corpus(), args.vocab_size)
    raise LocktuneError(f"text tower '{tower}' needs training captions to build its tokenizer")


def fixed_length_ids(tokenizer, texts: list[str], max_len: int, pad_id: int, prefix: list[int],
                     suffix: list[int]) -> dict[str, torch.Tensor]:
    """prefix + the text's ids (truncated to fit) + suffix, padded to `max_len`; mask 1 on real tokens."""
    room = max_len - len(prefix) - len(suffix)
    ids = torch.full((len(texts), max_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), max_len), dtype=torch.long)
    for row, encoding in enumerate(tokenizer.encode_batch(encodable(texts), add_special_tokens=False)):
        tokens = prefix + encoding.ids[:room] + suffix
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return {"ids": ids, "mask": mask}
