"""The README that `--format transformers` writes: its Python snippet, taken from the file verbatim, runs in a
process that never imports locktune, on a transparent (RGBA) PNG, through `model(...)` at the size the tower
was trained at (not its config's), and gives locktune's embeddings of the same files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from test_export_hf import POOLED, _trained, hf_net

# Run after the snippet, in the same process: what it computed, and whether locktune was imported.
REPORT = """
import json as _json, sys as _sys
assert "locktune" not in _sys.modules, "the snippet imported locktune"
print("REPORT " + _json.dumps({"image": image_embeddings.tolist(), "text": text_embeddings.tolist(),
                               "logits": outputs.logits_per_image.tolist(), "texts": texts,
                               "image_files": image_files, "locktune": "locktune" in _sys.modules}))
"""


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A CLIP vision tower configured at 32 px, trained at 48, with a BERT text tower, exported by the CLI."""
    from locktune.api import LitModel
    from locktune.cli import main

    root = tmp_path_factory.mktemp("snippet")
    net = _trained(hf_net(root, "clip_vision", "bert", [*POOLED, "model.image_size=48"], setting="UU"))
    LitModel(net).save(root / "run")
    assert main(["export", "--model", str(root / "run"), "--out", str(root / "out"), "--format", "transformers"]) == 0
    return LitModel(net), root / "out" / "transformers"


def _run_snippet(snippet: str, cwd) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    run = subprocess.run([sys.executable, "-c", snippet + REPORT], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    line = [row for row in run.stdout.splitlines() if row.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_the_readme_snippet_runs_verbatim_without_locktune_and_gives_its_embeddings(exported, tmp_path):
    model, folder = exported
    blocks = python_blocks((folder / "README.md").read_text())
    assert len(blocks) == 1
    got = _run_snippet(blocks[0], tmp_path)
    assert not got["locktune"]
    # The example image the snippet embeds is a PNG with transparent and half-transparent pixels.
    example = Image.open(got["image_files"][0])
    assert example.mode == "RGBA" and {0, 128, 255} <= set(np.unique(np.asarray(example)[..., 3]).tolist())
    # locktune's embeddings of the same file and texts: within 1e-4 (the export's own check is 1e-4 too).
    image = model.encode_image(got["image_files"]).numpy()
    text = model.encode_text(got["texts"]).numpy()
    np.testing.assert_allclose(np.array(got["image"]), image, atol=1e-4)
    np.testing.assert_allclose(np.array(got["text"]), text, atol=1e-4)
    cosines = image.astype(np.float64) @ text.astype(np.float64).T
    np.testing.assert_allclose(np.array(got["logits"]), model.scale * cosines, atol=1e-3)
    # Without the white compositing the picture is another one: the transparent areas would show black.
    dropped = model.encode_image(np.asarray(example)[..., :3]).numpy()
    assert np.abs(dropped - image).max() > 1e-3


def test_the_snippet_on_other_transparent_images(exported, tmp_path):
    """The same snippet text with another image list (LA and palette PNGs too): still locktune's embeddings."""
    model, folder = exported
    snippet = python_blocks((folder / "README.md").read_text())[0]
    files = []
    for mode in ("LA", "P", "RGB"):
        image = Image.new("RGBA", (70, 50), (0, 0, 0, 0))
        image.paste((30, 160, 40, 255), (10, 5, 50, 45))
        image = image.convert("LA") if mode == "LA" else image.convert("RGB") if mode == "RGB" else image
        if mode == "P":
            image = image.convert("RGB").quantize(3)
            image.info["transparency"] = image.getpixel((0, 0))
        files.append(str(tmp_path / f"{mode}.png"))
        image.save(files[-1])
    line = re.search(r"^image_files = .*$", snippet, flags=re.M).group(0)
    got = _run_snippet(snippet.replace(line, f"image_files = {files!r}"), tmp_path)
    np.testing.assert_allclose(np.array(got["image"]), model.encode_image(files).numpy(), atol=1e-4)


def test_the_readme_states_the_compositing_and_the_size(exported):
    model, folder = exported
    readme = (folder / "README.md").read_text()
    flat = " ".join(readme.split())
    assert "composites transparency (RGBA, LA and palette PNGs) on white before the image processor" in flat
    assert "48x48" in readme and "interpolate_pos_encoding" not in readme
    assert re.search(r"embeddings differ by up to \d\.\d+", readme), "the measured figure is stated"
    config = json.loads((folder / "config.json").read_text())
    assert config["vision_config"]["image_size"] == 48 == model.image_size


@pytest.mark.parametrize("vision", ["vit", "siglip_vision"])
def test_a_vision_transformer_trained_at_another_size_exports_at_that_size(tmp_path, vision):
    """ViT (class token) and SigLIP (none), configured at 32 px, trained at 40: the exported tower holds the
    position table its forward interpolates to at 40 px, so `model(...)` runs there with no
    `interpolate_pos_encoding` and gives locktune's embeddings (1e-5)."""
    import torch
    from transformers import VisionTextDualEncoderModel

    from locktune.export.transformers_dual import export_dual_encoder, trained_at_another_size

    net = _trained(hf_net(tmp_path, vision, "bert", [*POOLED, "model.image_size=40"], setting="UU"))
    assert trained_at_another_size(net)
    dual = VisionTextDualEncoderModel.from_pretrained(export_dual_encoder(net, tmp_path / "dual")).eval()
    assert dual.config.vision_config.image_size == 40
    torch.manual_seed(3)
    pixels, tokens = torch.randn(3, 3, 40, 40), net.tokenize(["a red circle", "a small blue house"])
    with torch.no_grad():
        out = dual(input_ids=tokens["ids"], attention_mask=tokens["mask"], pixel_values=pixels)
        torch.testing.assert_close(out.image_embeds, net.encode_image(pixels), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.text_embeds, net.encode_text(tokens["ids"], tokens["mask"]), atol=1e-5,
                                   rtol=0)
    # The position table is the 40-px one: 5 x 5 patches (+ ViT's class token), not the native 4 x 4.
    tables = {k: v for k, v in dual.vision_model.state_dict().items() if "position_embedding" in k}
    assert len(tables) == 1
    assert next(iter(tables.values())).numel() == ((40 // 8) ** 2 + (vision == "vit")) * 32
