"""Retrieval per language: each language is its own retrieval task over the images that have a caption
in it, so a language with fewer captions is scored on fewer images (its chance level is reported too)."""

from __future__ import annotations

import torch

from locktune.eval.metrics import retrieval_recalls
from locktune.eval.zero_shot import encode_texts

HEADLINE = tuple(f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10))


def multilingual_metrics(model, image_emb: torch.Tensor, valid: torch.Tensor,
                         captions: dict[str, list[str | None]]) -> dict[str, float]:
    """`LANG:metric` for every language, `mean:metric` over languages, and `languages` (how many)."""
    out: dict[str, float] = {}
    rows = {lang: [i for i, c in enumerate(column) if c and bool(valid[i])] for lang, column in captions.items()}
    # Every language's captions in one call: batching by length across languages pads far less.
    texts = [captions[lang][i] for lang in captions for i in rows[lang]]
    text_emb = encode_texts(model, texts)
    start = 0
    for lang in captions:
        keep = rows[lang]
        similarity = image_emb[keep] @ text_emb[start:start + len(keep)].T
        start += len(keep)
        metrics = retrieval_recalls(similarity, torch.arange(len(keep)))  # one caption per image here
        metrics["chance_R@1"] = 1.0 / len(keep)
        metrics["images"] = len(keep)
        for key, value in metrics.items():
            out[f"{lang}:{key}"] = value
    for key in HEADLINE + ("chance_R@1",):
        values = [out[f"{lang}:{key}"] for lang in captions]
        out[f"mean:{key}"] = sum(values) / len(values)
    out["languages"] = len(captions)
    return out
