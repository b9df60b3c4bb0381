"""Hugging Face datasets on local disk (save_to_disk folders and parquet), made with the real library."""

import io

import pytest
from PIL import Image

import datasets


def png_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def saved(tmp_path):
    rows = {
        "image": [{"bytes": png_bytes((255, 0, 0)), "path": None}, {"bytes": png_bytes((0, 255, 0)), "path": None},
                  {"bytes": b"not a png", "path": None}, {"bytes": png_bytes((0, 0, 255)), "path": None},
                  {"bytes": png_bytes((9, 9, 9)), "path": None}],
        "caption": [["a red square", "red"], ["a green square"], ["broken image bytes"], ["   "], ["a grey square", ""]],
    }
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))})
    dataset = datasets.Dataset.from_dict(rows, features=features)
    dataset.save_to_disk(str(tmp_path / "saved"))
    dataset.to_parquet(str(tmp_path / "pairs.parquet"))
    return tmp_path


@pytest.mark.parametrize("name", ["hf:{}/saved", "{}/saved", "{}/pairs.parquet"])
def test_hf_sources_keep_captions_together_and_count_skips(saved, name):
    from locktune.data.pairs import load_pairs

    pairs = load_pairs([name.format(saved)])
    assert pairs.captions == [["a red square", "red"], ["a green square"], ["broken image bytes"], ["a grey square"]]
    assert pairs.skipped == {"empty caption": 1, "caption dropped: empty caption": 1}
    assert pairs.images.load(0).getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(Exception):
        pairs.images.load(2)  # bad bytes fail when embedded, where they are skipped and counted


def test_hf_source_trains_through_the_cache(saved, tmp_path):
    from locktune.config import RunConfig
    from locktune.data.pairs import load_pairs
    from locktune.train.trainer import train

    pairs = load_pairs([f"hf:{saved}/saved"])
    config = RunConfig()
    config.model.setting, config.model.text_tower, config.model.image_tower = "Lu", "clip", "mobilenet_v2"
    config.model.image_size, config.model.text_width, config.model.text_layers = 32, 16, 1
    config.model.text_heads, config.model.text_vocab_size = 2, 300
    config.train.steps, config.train.batch_size, config.train.warmup_steps = 2, 3, 1
    config.data.image_workers = 0
    config.run_dir = str(tmp_path / "run")
    result = train(config, pairs=pairs)
    assert result.steps_done == 2 and list(result.skipped_images) == [f"hf:{saved}/saved#2"]


def test_unknown_column_is_a_clear_error(saved):
    from locktune.data.pairs import load_pairs
    from locktune.errors import LocktuneError

    with pytest.raises(LocktuneError, match="no caption column 'title'; columns: image, caption"):
        load_pairs([f"hf:{saved}/saved?caption=title"])
