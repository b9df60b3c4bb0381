"""ONNX export of both towers, each ending in its projection (none for `image_head: none`) and L2 normalisation.

    image.onnx   pixels float32 [batch, 3, size, size] (preprocessed as in locktune_model.json) -> image_embedding [batch, dim]
    text.onnx    ids int64 [batch, max_len], mask int64 [batch, max_len] (from the saved tokenizer) -> text_embedding [batch, dim]

The image tower goes through the TorchScript-based exporter (dynamo=False, fast); the text tower through
the torch.export-based one (dynamo=True, needs onnxscript), which handles Hugging Face encoders.  Both hold
for `hf:` towers (ViT, DeiT, DINOv2, CLIP/SigLIP vision, ConvNeXt; BERT, XLM-R, T5 encoders...): the graph
is traced at the model's pixel size, so a tower run at another size than its config's keeps its
interpolated position embeddings.  tests/test_saved_model_onnx.py checks each kind against PyTorch.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17  # for the TorchScript exporter; the torch.export one picks its own
# Loggers that report, as warnings, things that do not affect the exported graph: constant folding that
# gives up on a node (left as is) and torchvision ops that are not installed (and not used).
NOISY_LOGGERS = ("onnxscript.optimizer._constant_folding", "torch.onnx._internal.exporter._registration")


@contextmanager
def _quiet():
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings are about Python control flow we do not use
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class _ImageEncoder(nn.Module):
    # Holds only the image side: the TorchScript exporter alters the modules it is given (a Hugging Face
    # text tower inside gave different embeddings afterwards), so the text tower must not be among them.
    def __init__(self, net):
        super().__init__()
        self.tower, self.projection = net.image_tower, net.image_projection

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.tower(pixels).float()), dim=-1)


class _TextEncoder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net.encode_text(ids, mask)


def export_onnx(net, folder: str | Path, parts: tuple[str, ...] = ("image", "text")) -> dict[str, Path]:
    """Write image.onnx and text.onnx (or only the `parts` named) for a TwoTower into `folder`; returns their paths."""
    unknown = set(parts) - {"image", "text"}
    if unknown:
        raise ValueError(f"export_onnx parts are 'image' and 'text', not {sorted(unknown)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    size = net.preprocess.image_size
    paths = {part: folder / f"{part}.onnx" for part in ("image", "text") if part in parts}
    with _quiet(), torch.no_grad():
        if "image" in paths:
            torch.onnx.export(_ImageEncoder(net), (torch.zeros(2, 3, size, size),), str(paths["image"]), dynamo=False,
                              opset_version=OPSET, input_names=["pixels"], output_names=["image_embedding"],
                              dynamic_axes={"pixels": {0: "batch"}, "image_embedding": {0: "batch"}})
        if "text" in paths:
            tokens = net.tokenize(["a photo of a cat.", "a dog"])
            batch = torch.export.Dim("batch")
            torch.onnx.export(_TextEncoder(net), (tokens["ids"], tokens["mask"]), str(paths["text"]), dynamo=True,
                              input_names=["ids", "mask"], output_names=["text_embedding"],
                              dynamic_shapes={"ids": {0: batch}, "mask": {0: batch}}, verbose=False,
                              external_data=False)
    return paths
