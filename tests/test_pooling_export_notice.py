"""Item 9 of issue 26: `train` and `locktune towers NAME` say, before any training, whether the chosen pooling
exports to transformers' VisionTextDualEncoderModel (which embeds with each tower's pooled output), and why
`auto` chose the pooling it chose.  Checked against what the exporter itself accepts."""

from __future__ import annotations

import pytest
import torch

from hf_tiny import save_text, save_vision
from locktune.errors import LocktuneError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"vit": save_vision("vit", root / "vit"), "bert": save_text("bert", root / "bert"),
            "t5": save_text("t5", root / "t5")}


def _net(folders, image: str, text: str, *overrides: str):
    from locktune.config import load_config
    from locktune.model import build_model

    config = load_config(None, ["model.setting=LU", f"model.image_tower={image}", f"model.text_tower={text}",
                                "model.embed_dim=16", *overrides])
    torch.manual_seed(0)
    return build_model(config.model).eval()


def _exporter_accepts(net) -> bool:
    from locktune.export.transformers_dual import check_dual_encoder

    try:
        check_dual_encoder(net)
        return True
    except LocktuneError:
        return False


@pytest.mark.parametrize("text_pool, exports", [("auto", False), ("pooler", True)])
def test_the_line_agrees_with_the_exporter(folders, text_pool, exports):
    from locktune.towers.describe import model_export_line, tower_export

    net = _net(folders, f"hf:{folders['vit']}", f"hf:{folders['bert']}", f"model.text_pool={text_pool}")
    line = model_export_line(net.image_tower, net.text_tower)
    assert _exporter_accepts(net) is exports
    assert line.startswith("transformers export (--format transformers): " + ("yes" if exports else "no"))
    assert tower_export(net.image_tower)[0]  # a ViT with a trained pooler: auto pools with it, exportable
    if not exports:
        assert "pools with mean (auto: a BERT-style pooler is trained for next-sentence prediction" in line
        assert "use model.text_pool=pooler to export" in line


def test_a_tower_without_a_pooled_output_says_so(folders):
    from locktune.towers.describe import tower_export

    net = _net(folders, f"hf:{folders['vit']}", f"hf:{folders['t5']}", "model.image_pool=cls")
    ok, why = tower_export(net.text_tower)
    assert not ok and "no trained pooled output" in why
    ok, why = tower_export(net.image_tower)
    assert not ok and "use model.image_pool=pooler to export" in why and "(model.image_pool)" in why


def test_the_bundled_defaults_are_not_exportable_and_say_why():
    from locktune.towers.describe import model_export_line

    net = _net(None, "efficientnet_lite0", "minilm")
    line = model_export_line(net.image_tower, net.text_tower)
    assert _exporter_accepts(net) is False
    assert "the image tower efficientnet_lite0 is not a Hugging Face model" in line
    # MiniLM stays mean: what sentence-transformers trained it for similarity with.
    assert "the text tower minilm pools with mean (auto: its sentence-transformers pooling" in line
    assert "use model.text_pool=pooler to export" in line


def test_train_says_it_before_the_first_step(folders, tmp_path, capsys, monkeypatch):
    import locktune.train.trainer as trainer
    from locktune.config import load_config

    config = load_config(None, ["model.setting=LU", f"model.image_tower=hf:{folders['vit']}",
                                f"model.text_tower=hf:{folders['bert']}", "model.embed_dim=16",
                                "data.sources=[emoji]", "data.max_pairs_per_source=8", "train.steps=1",
                                "train.batch_size=4", f"run_dir={tmp_path / 'run'}", "train.device=cpu"])

    def no_training(*args, **kwargs):
        raise RuntimeError("stopped before the first step")

    monkeypatch.setattr(trainer, "_forward_backward", no_training)
    with pytest.raises(RuntimeError, match="before the first step"):
        trainer.train(config)
    assert "transformers export (--format transformers): no;" in capsys.readouterr().err


def test_towers_command_says_whether_a_tower_exports(folders, capsys):
    from locktune.cli import main

    assert main(["towers", f"hf:{folders['vit']}"]) == 0
    out = capsys.readouterr().out
    assert "(pool: pooler; auto: the model's own trained pooled output)" in out
    assert "exportable to transformers" in out and "not exportable" not in out
    assert main(["towers", f"hf:{folders['bert']}"]) == 0
    out = capsys.readouterr().out
    assert "not exportable to transformers" in out and "use model.text_pool=pooler to export" in out
    assert main(["towers", "efficientnet_lite0"]) == 0
    assert "is not a Hugging Face model" in capsys.readouterr().out
