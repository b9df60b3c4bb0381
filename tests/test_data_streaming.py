"""The streaming order: every record once per epoch, seeded, buffer-local, and resumable exactly."""

from itertools import islice

from locktune.data.streaming import StreamPosition, epoch_order, shuffled_stream

SHARDS = [7, 5, 9, 3]  # 24 records in 4 shards


def test_each_epoch_is_a_permutation_fixed_by_the_seed():
    first = epoch_order(SHARDS, 6, seed=1, epoch=0)
    assert sorted(first) == list(range(24))
    assert first == epoch_order(SHARDS, 6, seed=1, epoch=0)
    assert first != epoch_order(SHARDS, 6, seed=2, epoch=0) and first != epoch_order(SHARDS, 6, seed=1, epoch=1)


def test_buffer_of_one_keeps_shard_order_and_records_leave_within_the_buffer():
    order = epoch_order([4], 1, seed=0, epoch=0)
    assert order == [0, 1, 2, 3]  # one slot: each record leaves as the next enters
    # Output place p is taken when record p + 5 enters, so nothing from further ahead can be there yet:
    # memory is the buffer, not the dataset.  And it does mix: not the identity.
    order = epoch_order([30], 5, seed=3, epoch=0)
    assert all(index < position + 5 for position, index in enumerate(order)) and order != list(range(30))


def test_resume_from_any_position_continues_exactly():
    whole = list(islice(shuffled_stream(SHARDS, 6, seed=4), 60))  # two and a half epochs
    for cut in (0, 5, 24, 31, 59):
        position = whole[cut - 1][1] if cut else StreamPosition()
        saved = StreamPosition.from_dict(position.to_dict())
        rest = list(islice(shuffled_stream(SHARDS, 6, seed=4, start=saved), 60 - cut))
        assert rest == whole[cut:]
    assert whole[23][1] == StreamPosition(0, 24) and whole[24][1] == StreamPosition(1, 1)


def test_shard_sizes_follow_the_tar_files(tmp_path):
    from test_data_sources import png, write_tar

    from locktune.data.pairs import load_pairs
    from locktune.data.streaming import shard_sizes

    for shard, count in enumerate((3, 1, 2)):
        write_tar(tmp_path / f"{shard}.tar", [m for i in range(count)
                                              for m in ((f"{shard}-{i}.png", png()), (f"{shard}-{i}.txt", b"x"))])
    pairs = load_pairs([str(tmp_path / "{0..2}.tar")])
    assert shard_sizes(pairs.images) == [3, 1, 2]
    order = epoch_order(shard_sizes(pairs.images), 2, seed=0, epoch=0)
    assert sorted(order) == list(range(6))
