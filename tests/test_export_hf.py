"""`locktune export --format transformers`: two Hugging Face towers written as a VisionTextDualEncoderModel
that transformers alone loads (checked in a fresh process that never imports locktune) with locktune's
embeddings within 1e-5; models it cannot represent exactly are refused with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from hf_tiny import save_text, save_vision

POOLED = ["model.image_pool=pooler", "model.text_pool=pooler"]
TEXTS = ["a photo of a cat", "red", "a small green drawing of a house with a big tree and a smiling face here"]


def hf_net(tmp_path, vision: str, text: str, overrides=(), setting: str = "LU"):
    """A TwoTower over tiny random `vision` / `text` Hugging Face folders saved under tmp_path."""
    from locktune.config import load_config
    from locktune.model import build_model

    if not (tmp_path / vision).is_dir():
        save_vision(vision, tmp_path / vision)
    if not (tmp_path / text).is_dir():
        save_text(text, tmp_path / text)
    config = load_config(None, [f"model.setting={setting}", f"model.image_tower=hf:{tmp_path / vision}",
                                f"model.text_tower=hf:{tmp_path / text}", "model.embed_dim=16", *overrides])
    torch.manual_seed(0)
    return build_model(config.model).eval()


def _trained(net):
    """Move every weight away from the checkpoint's, as training would: the export must carry these."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
        net.log_logit_scale.fill_(2.5)
    return net


# Runs in a fresh interpreter: transformers, torch and numpy only.
TRANSFORMERS_SIDE = textwrap.dedent("""
    import json, sys
    import numpy as np, torch, torch.nn.functional as F
    from PIL import Image
    from transformers import AutoProcessor, VisionTextDualEncoderModel

    out = {}
    for case in json.loads(sys.argv[1]):
        folder, data = case["folder"], np.load(case["inputs"])
        model = VisionTextDualEncoderModel.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
        def pooled(result):  # a ModelOutput (pooler_output projected) in transformers 5, a tensor before
            return result if isinstance(result, torch.Tensor) else result.pooler_output

        with torch.no_grad():
            # At the trained size, with no interpolate_pos_encoding: the exported config says that size.
            image = pooled(model.get_image_features(pixel_values=torch.from_numpy(data["pixels"])))
            text = pooled(model.get_text_features(input_ids=torch.from_numpy(data["ids"]),
                                                  attention_mask=torch.from_numpy(data["mask"])))
            forward = model(input_ids=torch.from_numpy(data["ids"]), attention_mask=torch.from_numpy(data["mask"]),
                            pixel_values=torch.from_numpy(data["pixels"]))
            tokens = processor(text=case["texts"], padding="max_length", truncation=True,
                               max_length=data["ids"].shape[1], return_tensors="np")
            pixels = processor(images=[Image.open(case["png"]).convert("RGB")], return_tensors="pt").pixel_values
            png = pooled(model.get_image_features(pixel_values=pixels))
        out[folder] = {"image": F.normalize(image, dim=-1).tolist(), "text": F.normalize(text, dim=-1).tolist(),
                       "forward_image": forward.image_embeds.tolist(), "forward_text": forward.text_embeds.tolist(),
                       "logits_per_image": forward.logits_per_image.tolist(),
                       "png": F.normalize(png, dim=-1).tolist(), "ids": tokens["input_ids"].tolist(),
                       "logit_scale": float(model.logit_scale.exp()), "locktune": "locktune" in sys.modules}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two exports (ViT + BERT through the CLI; CLIP vision at another pixel size + BERT through the function),
    their locktune references, and what transformers alone computes from them."""
    import locktune
    from locktune.api import LitModel
    from locktune.cli import main
    from locktune.export.transformers_dual import export_dual_encoder, trained_at_another_size

    root = tmp_path_factory.mktemp("export_hf")
    png = root / "shape.png"
    image = Image.new("RGB", (80, 60), (220, 30, 30))
    image.paste((255, 255, 255), (10, 10, 30, 40))
    image.save(png)
    cases = {}
    net = _trained(hf_net(root, "vit", "bert", POOLED, setting="UU"))
    LitModel(net).save(root / "src")
    assert main(["export", "--model", str(root / "src"), "--out", str(root / "saved"), "--format", "transformers"]) == 0
    assert locktune.load(root / "saved").embed_dim == 16  # the saved-model folder is written as before
    cases["vit+bert"] = (net, root / "saved" / "transformers")
    net = _trained(hf_net(root, "clip_vision", "bert", [*POOLED, "model.image_size=48"], setting="UU"))
    assert trained_at_another_size(net)  # a 32-px tower trained at 48 px
    cases["clip_vision@48+bert"] = (net, export_dual_encoder(net, root / "clip_bert"))

    refs, specs = {}, []
    for name, (net, folder) in cases.items():
        torch.manual_seed(1)
        size = net.preprocess.image_size
        pixels = torch.randn(3, 3, size, size)
        tokens = net.tokenize(TEXTS)
        with torch.no_grad():
            refs[name] = {"image": net.encode_image(pixels).numpy(), "png": LitModel(net).encode_image([png]).numpy(),
                          "text": net.encode_text(tokens["ids"], tokens["mask"]).numpy(),
                          "ids": tokens["ids"].numpy(), "logit_scale": float(net.scale), "folder": str(folder)}
        inputs = root / f"{name}.npz"
        np.savez(inputs, pixels=pixels.numpy(), ids=tokens["ids"].numpy(), mask=tokens["mask"].numpy())
        specs.append({"folder": str(folder), "inputs": str(inputs), "texts": TEXTS, "png": str(png)})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    run = subprocess.run([sys.executable, "-c", TRANSFORMERS_SIDE, json.dumps(specs)], capture_output=True,
                         text=True, env=env, cwd=root, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    return {name: (ref, got[ref["folder"]]) for name, ref in refs.items()}


@pytest.mark.parametrize("name", ["vit+bert", "clip_vision@48+bert"])
def test_transformers_alone_gives_locktunes_embeddings(exported, name):
    ref, got = exported[name]
    assert not got["locktune"]  # transformers alone loaded it
    np.testing.assert_allclose(np.array(got["image"]), ref["image"], atol=1e-5)
    np.testing.assert_allclose(np.array(got["text"]), ref["text"], atol=1e-5)
    assert not np.allclose(ref["image"][0], ref["image"][1], atol=1e-3)  # the inputs really differ
    # The saved processor: the same token ids, and an image file preprocessed to the same embedding.
    np.testing.assert_array_equal(np.array(got["ids"]), ref["ids"])
    np.testing.assert_allclose(np.array(got["png"]), ref["png"], atol=1e-5)
    assert got["logit_scale"] == pytest.approx(ref["logit_scale"], rel=1e-5)
    # model(...) itself, at the trained size: the same embeddings, and logits = scale x cosine (float64 here).
    np.testing.assert_allclose(np.array(got["forward_image"]), ref["image"], atol=1e-5)
    np.testing.assert_allclose(np.array(got["forward_text"]), ref["text"], atol=1e-5)
    cosines = ref["image"].astype(np.float64) @ ref["text"].astype(np.float64).T
    np.testing.assert_allclose(np.array(got["logits_per_image"]), ref["logit_scale"] * cosines, atol=1e-4)


def test_dual_export_writes_the_processor_and_a_readme(exported):
    folder = exported["clip_vision@48+bert"][0]["folder"]
    names = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= names
    processor = json.loads(open(os.path.join(folder, "preprocessor_config.json")).read())
    assert processor["crop_size"] == {"height": 48, "width": 48}  # the size the model was trained at
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    assert config["vision_config"]["image_size"] == 48  # and the tower's config: model(...) runs there
    readme = open(os.path.join(folder, "README.md")).read()
    assert "interpolate_pos_encoding" not in readme and "48x48" in readme


def test_identity_head_exports_as_an_identity_projection(tmp_path):
    from transformers import VisionTextDualEncoderModel

    from locktune.export.transformers_dual import dual_embeddings, export_dual_encoder

    net = hf_net(tmp_path, "vit", "bert", [*POOLED, "model.image_head=none"])
    folder = export_dual_encoder(net, tmp_path / "dual")  # checks parity itself; here checked again
    dual = VisionTextDualEncoderModel.from_pretrained(folder).eval()
    pixels, tokens = torch.randn(2, 3, 32, 32), net.tokenize(TEXTS[:2])
    image, text = dual_embeddings(dual, pixels, tokens["ids"], tokens["mask"])
    with torch.no_grad():
        torch.testing.assert_close(image, net.encode_image(pixels), atol=1e-5, rtol=0)
        torch.testing.assert_close(text, net.encode_text(tokens["ids"], tokens["mask"]), atol=1e-5, rtol=0)
        # The projection itself, not only its normalised output (which a scaled or mis-sized one would also
        # give): exactly the identity, so get_image_features is transformers' own pooled vision output.
        weight = dual.visual_projection.weight
        hidden = dual.config.vision_config.hidden_size
        assert weight.shape == (hidden, hidden) and dual.config.projection_dim == hidden == net.embed_dim
        torch.testing.assert_close(weight, torch.eye(hidden), atol=0, rtol=0)
        features = dual.get_image_features(pixel_values=pixels)
        features = features if isinstance(features, torch.Tensor) else features.pooler_output
        torch.testing.assert_close(features, dual.vision_model(pixel_values=pixels).pooler_output, atol=1e-6, rtol=0)


def test_mean_pooling_is_refused_with_the_settings_it_needs(tmp_path, capsys):
    from locktune.api import LitModel
    from locktune.cli import main
    from locktune.errors import LocktuneError
    from locktune.export.transformers_dual import export_dual_encoder

    net = hf_net(tmp_path, "vit", "bert", ["model.image_pool=mean", "model.text_pool=mean"])
    with pytest.raises(LocktuneError, match=r"image tower with 'mean' and the text tower with 'mean'.*"
                                            r"model.image_pool=pooler model.text_pool=pooler") as error:
        export_dual_encoder(net, tmp_path / "dual")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "dual").exists()
    LitModel(net).save(tmp_path / "src")
    assert main(["export", "--model", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--format", "transformers"]) == 2
    assert "model.text_pool=pooler" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_towers_not_from_hugging_face_are_refused(tmp_path):
    from test_api import tiny_net

    from locktune.errors import LocktuneError
    from locktune.export.transformers_dual import export_dual_encoder

    with pytest.raises(LocktuneError, match="image tower 'mobilenet_v2'.*text tower 'clip'.*--format locktune"):
        export_dual_encoder(tiny_net(), tmp_path / "dual")
