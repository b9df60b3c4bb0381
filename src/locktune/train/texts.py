"""The training loop's text side, decided once (`cache/text_side.reads_text_cache`): a locked text tower's
outputs are rows of a cache (the sharded cache's text vectors, or the text cache computed here once), so a step
runs only the text head; otherwise the loop tokenizes the step's captions and the tower runs on them.  Either
way the caption is the one the batch plan chose, so both paths train on the same pairs and captions."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from locktune.cache.sharded import ShardedCache
from locktune.cache.text_side import cached_text_features, reads_text_cache, text_identity
from locktune.errors import LocktuneError
from locktune.runtime import distributed
from locktune.towers.setting import unwrap


def check_text_matches(sharded: ShardedCache, model, where: str) -> bool:
    """Whether training reads `sharded`'s text vectors: only for the text tower they were computed with (another
    one is refused); a cache without them leaves the tower to run every step (said once)."""
    stored = sharded.text_identity
    if stored is None:
        if distributed.is_main():
            print(f"locktune: data.embedding_cache '{where}' holds no text vectors, so the locked text tower runs "
                  "every step; rebuild it with `locktune embed --sharded` and this ?L setting to read them instead",
                  file=sys.stderr)
        return False
    expected = text_identity(model.text_tower)
    for key, value in expected.items():
        if stored.get(key) != value:
            raise LocktuneError(f"data.embedding_cache '{where}' holds the text vectors of another text tower "
                                f"({key} {stored.get(key)!r}, this model: {value!r}); rebuild it with `locktune embed "
                                "--sharded` and this model's config, or set data.text_cache=false")
    return True


@dataclass
class TrainingTexts:
    rows: Callable[[Sequence[int], Sequence[int]], torch.Tensor] | None = None  # (pairs, caption draws) -> [b, D]

    @classmethod
    def open(cls, model, config, captions, sharded: ShardedCache | None) -> "TrainingTexts":
        """The text side for this run: cached rows for a locked text tower (data.text_cache), else nothing."""
        if not reads_text_cache(model, config):
            return cls()
        if sharded is not None:
            if not check_text_matches(sharded, model, config.data.embedding_cache):
                return cls()
            return cls(sharded.text_rows)
        cached = cached_text_features(model.text_tower, captions, precision=getattr(model, "precision", "fp32"),
                                      desc=f"embedding captions ({unwrap(model.text_tower).name})",
                                      recompute_corrupt=config.data.recompute_corrupt_cache)
        return cls(cached.rows)

    def take(self, pair_ids: Sequence[int], caption_draws: Sequence[int]) -> torch.Tensor | None:
        """The cached text-tower outputs of each pair's drawn caption (draw % its captions), or None when the
        tower runs every step."""
        return None if self.rows is None else self.rows(pair_ids, caption_draws)
