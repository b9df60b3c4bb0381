"""Paired seeds are real: arms of a grid with the same seed draw the same pairs and captions at every step,
whatever their image side skips (issue 29 item 1).  A locked tower's cache skips an unreadable image up front,
a trained tower's decoder finds it per batch; both replace it by the next readable pair, so the plans agree."""

import json

import pytest
from PIL import Image

from tests.tiny_configs import tiny_run

BROKEN = (3, 11)


@pytest.fixture(scope="module")
def pairs_with_broken_images(tmp_path_factory):
    from locktune.data.images import FileImages
    from locktune.data.pairs import PairSet

    folder = tmp_path_factory.mktemp("paired")
    paths = []
    for i in range(20):
        path = folder / f"img{i}.png"
        Image.new("RGB", (40, 40), (12 * i, 255 - 12 * i, 40 + 5 * i)).save(path)
        paths.append(path)
    for i in BROKEN:
        paths[i].write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    captions = [[f"colour number {i}", f"a swatch, shade {i}"] for i in range(20)]
    return PairSet("paired", FileImages(paths), captions)


def batches_seen(monkeypatch, setting, pairs, run_dir, seed=3):
    """(pair ids, token ids) of every step of a 5-step run with `setting`, and its training.json."""
    from locktune.train import trainer

    seen = []
    monkeypatch.undo()  # the previous call's recorder
    original = trainer._next_batch

    def recording(*args, **kwargs):
        batch = original(*args, **kwargs)
        seen.append(batch.ids.tolist())
        return batch

    monkeypatch.setattr(trainer, "_next_batch", recording)
    config = tiny_run(run_dir, steps=5, train={"batch_size": 8, "seed": seed})
    config.model.setting = setting
    result = trainer.train(config, pairs=pairs)
    assert sorted(result.skipped_images) == sorted(str(pairs.images.paths[i]) for i in BROKEN)
    return seen, json.loads((run_dir / "training.json").read_text())


def test_locked_and_trained_image_arms_share_the_data_order(tmp_path, monkeypatch, pairs_with_broken_images):
    locked, locked_summary = batches_seen(monkeypatch, "Lu", pairs_with_broken_images, tmp_path / "Lu")
    trained, trained_summary = batches_seen(monkeypatch, "uu", pairs_with_broken_images, tmp_path / "uu")
    assert locked == trained  # the same captions (so pairs) at every step, though each side skips differently
    assert locked_summary["data_order"] == trained_summary["data_order"]
    _, other_seed = batches_seen(monkeypatch, "Lu", pairs_with_broken_images, tmp_path / "Lu-s4", seed=4)
    assert other_seed["data_order"]["fingerprint"] != locked_summary["data_order"]["fingerprint"]
    assert other_seed["data_order"]["pairs"] == locked_summary["data_order"]["pairs"]


def test_next_usable_rows_wrap_and_refuse_mostly_unusable_data():
    import numpy as np

    from locktune.errors import LocktuneError
    from locktune.train.images import next_usable_rows

    valid = np.array([True, False, True, True, False])
    assert next_usable_rows(valid, "x").tolist() == [0, 2, 2, 3, 0]
    with pytest.raises(LocktuneError, match="more than half of the 5 training images in 'x'"):
        next_usable_rows(np.array([True, False, False, True, False]), "x")


def test_a_checkpoint_written_before_a_key_existed_still_resumes():
    """A key added after a checkpoint was written counts at its default; a real change is still refused."""
    from locktune.config import RunConfig
    from locktune.train.checkpoint import changed_keys

    now = RunConfig().to_dict()
    old = {section: dict(values) if isinstance(values, dict) else values for section, values in now.items()}
    del old["data"]["text_cache"], old["model"]["text_head"]
    assert changed_keys(old, now) == []
    now["model"]["text_head"] = "mlp"
    assert changed_keys(old, now) == ["model.text_head"]
