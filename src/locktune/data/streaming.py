"""A streaming order over sharded records: shards in a seeded order, records through a shuffle buffer.

This is the order a web-scale loader reads in (a shard at a time, never random access over the whole
set), expressed over record indices so it costs no decoding.  It is a pure function of (shard sizes,
buffer size, seed, epoch), so a position (epoch, records emitted) resumes it exactly: the indices are
replayed up to the position, which is index arithmetic only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

from locktune.data.images import ImageSet


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream stands: `emitted` records of epoch `epoch` have been handed out."""

    epoch: int = 0
    emitted: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StreamPosition":
        return cls(int(data["epoch"]), int(data["emitted"]))


def epoch_order(shard_sizes: list[int], buffer_size: int, seed: int, epoch: int) -> list[int]:
    """Every record index once: shards in a seeded order, each record entering a buffer of `buffer_size`
    and a random buffered record leaving in its place; the buffer drains shuffled at the end."""
    rng = np.random.default_rng([seed, epoch])
    starts = np.cumsum([0] + list(shard_sizes))
    incoming = [i for s in rng.permutation(len(shard_sizes)) for i in range(int(starts[s]), int(starts[s + 1]))]
    size = max(1, buffer_size)
    # Drawn as one vector up front: the same numbers whatever the consumer does between records.
    draws = rng.integers(0, size, max(0, len(incoming) - size))
    buffer, order = incoming[:size], []
    for step, index in enumerate(incoming[size:]):
        slot = int(draws[step])
        order.append(buffer[slot])
        buffer[slot] = index
    order += [buffer[i] for i in rng.permutation(len(buffer))]
    return order


def shuffled_stream(shard_sizes: list[int], buffer_size: int, seed: int,
                    start: StreamPosition = StreamPosition()) -> Iterator[tuple[int, StreamPosition]]:
    """(record index, position after it) for epoch after epoch, from `start`; endless."""
    total = sum(shard_sizes)
    if total == 0:
        return
    epoch, skip = start.epoch, start.emitted
    while True:
        order = epoch_order(shard_sizes, buffer_size, seed, epoch)
        for emitted in range(skip, total):
            yield order[emitted], StreamPosition(epoch, emitted + 1)
        epoch, skip = epoch + 1, 0


def shard_sizes(images: ImageSet) -> list[int]:
    """Records per shard, in order, for images read from WebDataset shards (runs of the same tar file);
    any other image set is one shard."""
    from locktune.data.sources.webdataset import TarImages

    if not isinstance(images, TarImages):
        return [len(images)] if len(images) else []
    sizes: list[int] = []
    previous = None
    for path, _, _ in images.locations:
        if path != previous:
            sizes.append(0)
            previous = path
        sizes[-1] += 1
    return sizes
