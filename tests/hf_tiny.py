"""Tiny random-weight Hugging Face models saved to local folders, as a user's `save_pretrained` would leave them.

Each folder holds config.json, model.safetensors, and the image-processor config (image towers) or the
tokenizer files (text towers), so locktune loads them through exactly the code path a hub model takes,
with no network.  Sizes are a few thousand parameters: a training step takes milliseconds.
"""

from __future__ import annotations

from pathlib import Path

SIZE = 32  # pixels: every tiny image tower is pretrained (configured) at 32 px

WORDS = ("a photo of the cat dog bird fish car tree house red green blue small big drawing icon emoji face smiling "
         "flag star heart hand person animal food sign arrow symbol letter digit black white yellow").split()


def _vision(kind: str):
    import transformers as t

    common = dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64)
    if kind == "vit":
        return (t.ViTModel(t.ViTConfig(image_size=SIZE, patch_size=8, **common)), "ViTImageProcessorPil",
                {"size": {"height": SIZE, "width": SIZE}})
    if kind == "dinov2":
        return (t.Dinov2Model(t.Dinov2Config(image_size=SIZE, patch_size=8, **common)), "BitImageProcessorPil",
                {"size": {"shortest_edge": 36}, "crop_size": {"height": SIZE, "width": SIZE},
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]})
    if kind == "clip_vision":
        return (t.CLIPVisionModel(t.CLIPVisionConfig(image_size=SIZE, patch_size=8, **common)), "CLIPImageProcessorPil",
                {"size": {"shortest_edge": SIZE}, "crop_size": {"height": SIZE, "width": SIZE}})
    if kind == "siglip_vision":
        return (t.SiglipVisionModel(t.SiglipVisionConfig(image_size=SIZE, patch_size=8, **common)),
                "SiglipImageProcessorPil", {"size": {"height": SIZE, "width": SIZE}})
    if kind == "convnext":
        config = t.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=SIZE)
        return (t.ConvNextModel(config), "ConvNextImageProcessorPil",
                {"size": {"shortest_edge": SIZE}, "crop_pct": 0.875})
    raise ValueError(kind)


VISION_KINDS = ("vit", "dinov2", "clip_vision", "siglip_vision", "convnext")
TEXT_KINDS = ("bert", "xlm_roberta", "t5")


def save_vision(kind: str, folder: Path, seed: int = 0) -> Path:
    """A tiny `kind` vision model and its image processor saved to `folder`."""
    import torch
    import transformers as t

    torch.manual_seed(seed)
    model, processor, fields = _vision(kind)
    model.save_pretrained(folder)
    getattr(t, processor)(**fields).save_pretrained(folder)
    return Path(folder)


def _unigram_tokenizer():
    """A SentencePiece-style Unigram tokenizer (what XLM-R and T5 use), trained on a few words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 20 + WORDS, trainer=trainer)
    return tok


def save_text(kind: str, folder: Path, seed: int = 0) -> Path:
    """A tiny `kind` text encoder and its tokenizer saved to `folder`."""
    import torch
    import transformers as t

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64)
    if kind == "bert":
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + list(WORDS)
        (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)))
        tokenizer = t.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
        model = t.BertModel(t.BertConfig(vocab_size=len(tokenizer), **common))
    elif kind == "xlm_roberta":
        tokenizer = t.XLMRobertaTokenizerFast(tokenizer_object=_unigram_tokenizer(), bos_token="<s>", eos_token="</s>",
                                              pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                              cls_token="<s>", sep_token="</s>")
        model = t.XLMRobertaModel(t.XLMRobertaConfig(vocab_size=len(tokenizer), pad_token_id=1, **common))
    elif kind == "t5":
        tokenizer = t.T5TokenizerFast(tokenizer_object=_unigram_tokenizer(), eos_token="</s>", pad_token="<pad>",
                                      unk_token="<unk>", extra_ids=0)
        model = t.T5EncoderModel(t.T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2,
                                            num_heads=2, pad_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                            feed_forward_proj="gated-gelu", dropout_rate=0.0))
    else:
        raise ValueError(kind)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder
