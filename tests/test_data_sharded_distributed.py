"""Two real processes (gloo) split the sharded precompute by shard and give the single-process cache."""

from pathlib import Path

import numpy as np
import pytest
import torch

from locktune.cache.sharded import ShardedCache
from test_data_sharded_cache import many_pairs
from test_distributed import launch

pytestmark = pytest.mark.slow  # several processes or a long run: `make test-slow`


def build(folder: Path, pattern: str) -> int:
    """Build the cache; returns how many images this process embedded."""
    from locktune.cache.sharded import build_sharded_cache
    from locktune.data.pairs import load_pairs
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    tower = build_image_tower("mobilenet_v2", pretrained=True)  # from scratch it outputs ~0: nothing to compare
    seen = []
    forward = tower.forward
    tower.forward = lambda pixels: (seen.append(len(pixels)), forward(pixels))[1]
    build_sharded_cache(tower, preprocess_for(tower, 64), load_pairs([pattern]), folder, shard_size=6,
                        batch_size=3, workers=0)
    return sum(seen)


def _rank_build(rank, tmp_path, pattern):
    embedded = build(Path(tmp_path) / "two", pattern)
    (Path(tmp_path) / f"rank{rank}.txt").write_text(str(embedded))


def test_two_ranks_split_shards_and_match_one_process(tmp_path):
    pattern = many_pairs(tmp_path, 22)
    launch(_rank_build, tmp_path, pattern)
    # 4 shards of 6, 6, 6, 4 rows dealt round-robin: rank 0 gets shards 0 and 2, rank 1 shards 1 and 3.
    assert [int((tmp_path / f"rank{r}.txt").read_text()) for r in (0, 1)] == [12, 10]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks, so the float arithmetic is the same
    try:
        assert build(tmp_path / "one", pattern) == 22
    finally:
        torch.set_num_threads(threads)
    one, two = ShardedCache.open(tmp_path / "one", verify=True), ShardedCache.open(tmp_path / "two", verify=True)
    assert np.array_equal(one.rows(range(22)).numpy(), two.rows(range(22)).numpy())
    assert one.rows(range(22)).abs().max() > 0.1
    assert list(one.captions) == list(two.captions) and list(one.keys) == list(two.keys)


def _rank_refused(rank, tmp_path, pattern):
    from locktune.errors import LocktuneError

    try:
        build(Path(tmp_path) / "bad", pattern)
        message = "built"
    except LocktuneError as error:
        message = str(error)
    (Path(tmp_path) / f"refused{rank}.txt").write_text(message)


def test_mostly_broken_input_stops_every_rank_with_the_same_error(tmp_path):
    from test_data_sources import png, write_tar

    members = [("a.png", png()), ("a.txt", b"fine")]
    members += [m for i in range(7) for m in ((f"b{i}.png", b"garbage"), (f"b{i}.txt", b"broken"))]
    write_tar(tmp_path / "x.tar", members)
    launch(_rank_refused, tmp_path, str(tmp_path / "x.tar"))  # returning at all means no rank was left waiting
    messages = [(tmp_path / f"refused{r}.txt").read_text() for r in (0, 1)]
    assert messages[0] == messages[1] and "7 of 8 records failed (not an image: 7)" in messages[0]
