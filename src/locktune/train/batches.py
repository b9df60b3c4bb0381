"""Which pairs and which caption go into step s: a pure function of (seed, step).

Nothing here carries state between steps, so the data position of a resumed run is just its step.
Each epoch is a fresh permutation (the last partial batch is dropped); each pair contributes one of
its captions, drawn anew each time it is seen.
"""

from __future__ import annotations

import numpy as np
import torch


class BatchPlan:
    def __init__(self, caption_counts: np.ndarray | list[int], batch_size: int, seed: int):
        if len(caption_counts) < batch_size:
            raise ValueError(f"only {len(caption_counts)} usable pairs for a batch of {batch_size}; "
                             "lower train.batch_size or add data")
        self.caption_counts = torch.as_tensor(np.asarray(caption_counts, dtype=np.int32))
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(caption_counts) // batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.caption_counts), generator=g)
        return self._perm

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pair indices, caption index within each pair's captions) for `step`."""
        epoch, within = divmod(step, self.steps_per_epoch)
        pairs = self._permutation(epoch)[within * self.batch_size:(within + 1) * self.batch_size]
        g = torch.Generator().manual_seed(self.seed * 7_919 + step + 1)
        draws = torch.randint(0, 1 << 30, (len(pairs),), generator=g)
        return pairs, draws % self.caption_counts[pairs]
