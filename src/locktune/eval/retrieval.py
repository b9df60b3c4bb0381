"""Image-text retrieval: recall@k both ways, several captions per image handled the standard way."""

from __future__ import annotations

import torch

from locktune.eval.metrics import retrieval_recalls
from locktune.eval.zero_shot import encode_texts


@torch.no_grad()
def retrieval_metrics(model, image_emb: torch.Tensor, valid: torch.Tensor,
                      captions: list[list[str]]) -> tuple[dict[str, float], dict]:
    """Recall@1/5/10 over the readable images; an image query is right if any of its captions is retrieved.

    Returns (metrics, details) where details hold the similarity matrix and who owns each caption (for plots).
    """
    keep = [i for i in range(len(captions)) if bool(valid[i]) and captions[i]]
    texts = [c for i in keep for c in captions[i]]
    owner = torch.tensor([row for row, i in enumerate(keep) for _ in captions[i]])
    similarity = image_emb[keep] @ encode_texts(model, texts).T
    metrics = retrieval_recalls(similarity, owner)
    metrics["chance_R@1"] = 1.0 / len(keep)
    metrics["images"] = len(keep)
    return metrics, {"similarity": similarity, "owner": owner, "rows": keep, "texts": texts}
