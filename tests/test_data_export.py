"""A built-in source exported to WebDataset shards reads back the same pairs and trains."""

from __future__ import annotations

from pathlib import Path

from locktune.cli import main
from locktune.data.pairs import load_pairs


def test_emoji_export_round_trip_then_train(tmp_path, emoji_pairs):
    from locktune.data.export import export_webdataset, shard_pattern

    source = load_pairs(["emoji"], max_pairs_per_source=40)
    shards, skipped = export_webdataset(source, tmp_path / "shards", shard_size=16)
    assert [s.name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"] and not skipped
    assert shard_pattern(shards) == str(tmp_path / "shards" / "{00000..00002}.tar")
    back = load_pairs([shard_pattern(shards)])
    assert back.captions == source.captions and back.skipped == {}
    for i in (0, 17, 39):  # the PNGs are copied byte for byte
        assert back.images.read_bytes(i) == Path(source.images.paths[i]).read_bytes()

    from test_reliability import tiny

    from locktune.train.trainer import train

    result = train(tiny(tmp_path / "run", steps=2), pairs=back)
    assert result.steps_done == 2 and all(loss == loss for loss in result.losses)


def test_cli_data_export(tmp_path, capsys):
    assert main(["data", "export", "emoji", str(tmp_path / "out"), "--shard-size", "5", "--max-pairs", "12"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    assert "12 pairs -> 3 shards" in capsys.readouterr().out
    assert len(load_pairs([str(tmp_path / "out" / "{00000..00002}.tar")])) == 12
