"""ONNX export of both towers: onnxruntime gives the PyTorch embeddings within 1e-4, at any batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_api import tiny_net


@pytest.mark.parametrize("text_tower", ["clip", "minilm"])
def test_onnx_towers_match_pytorch(tmp_path, text_tower):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt; run `make setup`")
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
