"""A fingerprint of what a run's seed made of the data: which pairs it trains on (after the validation hold-out)
and the batch plan drawn over them (which pair, which caption, at every step).

Paired seeds mean that arm A and arm B with seed s saw the same data in the same order.  Every arm stores this
fingerprint (`training.json`, and so its ablation record), and the studies' report checks that arms it compares
as paired share it, instead of trusting the design.  The plan is a pure function of (seed, batch size, each
pair's caption count) (`train/batches.py`), so those are hashed, with the first batch as drawn (a change in how
plans are drawn changes the fingerprint too); hashing every step would cost as much as the run at scale.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from locktune.train.batches import BatchPlan


def _digest(*parts: bytes) -> str:
    hasher = hashlib.blake2b(digest_size=8)
    for part in parts:
        hasher.update(len(part).to_bytes(8, "little"))
        hasher.update(part)
    return hasher.hexdigest()


def pairs_fingerprint(keys: Sequence[str]) -> str:
    """The training pairs, by key and order."""
    hasher = hashlib.blake2b(digest_size=8)
    for key in keys:
        hasher.update(str(key).encode("utf-8", "surrogatepass") + b"\0")
    return hasher.hexdigest()


def plan_fingerprint(plan: BatchPlan) -> str:
    """The batch plan: its inputs and its first batch."""
    rows, captions = plan.batch(0)
    counts = np.ascontiguousarray(plan.caption_counts.numpy(), dtype=np.int32)
    return _digest(str((plan.seed, plan.batch_size)).encode(), counts.tobytes(),
                   rows.numpy().astype(np.int64).tobytes(), captions.numpy().astype(np.int64).tobytes())


def data_order(plan: BatchPlan, keys: Sequence[str]) -> dict[str, str]:
    """{"pairs", "plan", "fingerprint"}: two arms with equal `fingerprint` drew the same batches from the same
    pairs at every step (an arm's skipped images are replaced in the same way in every arm: `train/images.py`)."""
    pairs, batches = pairs_fingerprint(keys), plan_fingerprint(plan)
    return {"pairs": pairs, "plan": batches, "fingerprint": _digest(pairs.encode(), batches.encode())}
