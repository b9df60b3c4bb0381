"""ONNX export of both towers: onnxruntime gives the PyTorch embeddings within 1e-4, at any batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_api import tiny_net


@pytest.mark.parametrize("text_tower", ["clip", pytest.param("minilm", marks=pytest.mark.slow)])  # minilm: ~17 s
def test_onnx_towers_match_pytorch(tmp_path, text_tower):
    import onnxruntime as ort  # in requirements.txt: missing is a failure (`make setup`), not a skip
    from locktune.export.onnx import export_onnx

    net = tiny_net("Lu", text_tower)
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 64, 64)  # a batch size other than the one exported with
    tokens = net.tokenize(["a red square", "tree", "a blue circle on a long caption that is cut off here"])
    with torch.no_grad():
        image_ref = net.encode_image(pixels).numpy()
        text_ref = net.encode_text(tokens["ids"], tokens["mask"]).numpy()
    paths = export_onnx(net, tmp_path)  # after the references: they must not depend on the export
    image = ort.InferenceSession(str(paths["image"])).run(None, {"pixels": pixels.numpy()})[0]
    text = ort.InferenceSession(str(paths["text"])).run(
        None, {"ids": tokens["ids"].numpy(), "mask": tokens["mask"].numpy()})[0]
    np.testing.assert_allclose(image, image_ref, atol=1e-4)
    np.testing.assert_allclose(text, text_ref, atol=1e-4)
    assert not np.allclose(image[0], image[1], atol=1e-3)  # the inputs really differ, so the check means something
    with torch.no_grad():  # exporting must leave the PyTorch model as it was
        np.testing.assert_allclose(net.encode_text(tokens["ids"], tokens["mask"]).numpy(), text_ref, atol=1e-6)


# Towers users bring: every tiny vision and text kind once, with the poolings and sizes that change the graph
# (another pixel size than the config's interpolates the position embeddings; image_head none has no projection).
# The last two export the image tower alone: the text export is the slow part and BERT is covered above.
HF_CASES = [
    ("vit", "bert", ["model.text_pool=pooler"], ("image", "text")),
    ("dinov2", "xlm_roberta", ["model.text_pool=cls"], ("image", "text")),
    ("clip_vision", "t5", ["model.image_pool=mean", "model.image_size=48"], ("image", "text")),
    ("siglip_vision", "bert", ["model.image_size=48", "model.image_head=none"], ("image",)),
    ("convnext", "bert", [], ("image",)),
]


@pytest.mark.parametrize("vision,text,overrides,parts", HF_CASES, ids=[f"{v}+{t}" for v, t, _, _ in HF_CASES])
def test_onnx_hf_towers_match_pytorch(tmp_path, vision, text, overrides, parts):
    import onnxruntime as ort  # in requirements.txt: missing is a failure (`make setup`), not a skip
    from locktune.export.onnx import export_onnx
    from test_export_hf import hf_net

    net = hf_net(tmp_path, vision, text, overrides)
    size = net.preprocess.image_size
    torch.manual_seed(1)
    inputs = {n: (torch.randn(n, 3, size, size), net.tokenize(["a red square", "tree", "a blue circle here"][:n]))
              for n in (1, 3)}  # batch sizes other than the one exported with
    with torch.no_grad():
        refs = {n: (net.encode_image(p).numpy(), net.encode_text(t["ids"], t["mask"]).numpy())
                for n, (p, t) in inputs.items()}
    paths = export_onnx(net, tmp_path / "onnx", parts=parts)
    assert sorted(paths) == sorted(parts)
    sessions = {k: ort.InferenceSession(str(path)) for k, path in paths.items()}
    for n, (pixels, tokens) in inputs.items():
        image = sessions["image"].run(None, {"pixels": pixels.numpy()})[0]
        np.testing.assert_allclose(image, refs[n][0], atol=1e-4)
        if "text" in sessions:
            text_out = sessions["text"].run(None, {"ids": tokens["ids"].numpy(), "mask": tokens["mask"].numpy()})[0]
            np.testing.assert_allclose(text_out, refs[n][1], atol=1e-4)
    assert not np.allclose(refs[3][0][0], refs[3][0][1], atol=1e-3)
    with torch.no_grad():  # exporting must leave the PyTorch model as it was
        pixels, tokens = inputs[3]
        np.testing.assert_allclose(net.encode_image(pixels).numpy(), refs[3][0], atol=1e-6)
        np.testing.assert_allclose(net.encode_text(tokens["ids"], tokens["mask"]).numpy(), refs[3][1], atol=1e-6)
