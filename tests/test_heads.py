"""Heads by name (`model/heads.py`): the mlp head against a float64 reference written from its formula, the
names' one-line errors, paired initialisation (linear heads draw what they always drew), the optimizer's head
group, and every way out of the model: a saved folder loaded in a fresh process, ONNX within 1e-4, and the
transformers dual encoder's one-line refusal."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from locktune.config import ModelConfig
from locktune.errors import LocktuneError

CORPUS = ["a red square", "a blue circle", "a green triangle on a hill"] * 30


def net(image_head="mlp", text_head="mlp", setting="Lu", text_tower="clip", seed=0, **mlp):
    """A seconds-fast TwoTower (MobileNetV2 at 64 px, a one-layer CLIP text tower) with the heads named."""
    from locktune.model import build_model

    config = ModelConfig(setting=setting, text_tower=text_tower, image_tower="mobilenet_v2", image_size=64,
                         text_width=32, text_layers=1, text_heads=2, text_vocab_size=300, embed_dim=24,
                         image_head=image_head, text_head=text_head, **{f"head_mlp_{k}": v for k, v in mlp.items()})
    torch.manual_seed(1234)  # the global stream as the trainer leaves it; the towers draw different amounts
    return build_model(config, corpus=lambda: iter(CORPUS), seed=seed).eval()


# ----------------------------------------------------------------------------------- the mlp head's numbers
def _layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased, as layer norm's definition
    return (x - mean) / np.sqrt(var + eps) * weight + bias


ACT = {"gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
       "relu": lambda x: np.maximum(x, 0), "silu": lambda x: x / (1 + np.exp(-x))}


def _reference(head, x: np.ndarray, act: str, residual: bool) -> np.ndarray:
    """The head written out in float64 numpy from its parameters, by the formula its docstring states."""
    p = {k: v.detach().double().numpy() for k, v in head.state_dict().items()}
    linear = lambda name, h: h @ p[f"{name}.weight"].T + p[f"{name}.bias"]  # noqa: E731
    layers = sorted({int(k.split(".")[1]) for k in p})
    h = x
    if residual:
        for i in layers[:-2]:  # blocks: h + W2 act(W1 LN(h))
            n = f"layers.{i}"
            inner = _layer_norm(h, p[f"{n}.norm.weight"], p[f"{n}.norm.bias"])
            h = h + linear(f"{n}.down", ACT[act](linear(f"{n}.up", inner)))
        norm, out = layers[-2:]
        return linear(f"layers.{out}", _layer_norm(h, p[f"layers.{norm}.weight"], p[f"layers.{norm}.bias"]))
    for i in layers[:-1]:  # Linear, act (dropout 0): the only indices with weights are the linear layers
        h = ACT[act](linear(f"layers.{i}", h))
    return linear(f"layers.{layers[-1]}", h)


@pytest.mark.parametrize("act,residual,depth,width", [("gelu", True, 2, 0), ("relu", False, 2, 40),
                                                      ("silu", True, 1, 12), ("gelu", False, 1, 0)])
def test_mlp_head_matches_a_float64_reference(act, residual, depth, width):
    from locktune.model.heads import MlpHead, draw_head

    head = MlpHead(20, 7, depth=depth, width=width, act=act, residual=residual).eval()
    draw_head(head, torch.Generator().manual_seed(3))
    with torch.no_grad():  # norms away from the identity, so their scale and shift are checked too
        for module in head.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    hidden = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][0].out_features
    assert hidden == (width or (4 * 20 if residual else 80))  # 0: four times the input width
    x = torch.randn(5, 20, dtype=torch.float64)
    expected = _reference(head, x.numpy(), act, residual)
    assert expected.shape == (5, 7)
    np.testing.assert_allclose(head(x.float()).detach().numpy(), expected, rtol=0, atol=2e-5)
    np.testing.assert_allclose(head.double()(x).detach().numpy(), expected, rtol=0, atol=1e-12)


def test_the_model_embeds_through_its_mlp_heads():
    model = net(activation="relu", depth=2, width=16)
    features = torch.randn(4, 1280)
    expected = _reference(model.image_projection, features.double().numpy(), "relu", True)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    with torch.no_grad():
        np.testing.assert_allclose(model.embed_image_features(features).numpy(), expected, atol=2e-6)
    assert model.embed_dim == 24 and model.image_projection.out_dim == model.text_projection.out_dim == 24
    tokens = model.tokenize(["a red square", "tree"])
    with torch.no_grad():
        tower = model.text_tower(tokens["ids"], tokens["mask"]).double().numpy()
        expected = _reference(model.text_projection, tower, "relu", True)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(model.encode_text(tokens["ids"], tokens["mask"]).numpy(), expected, atol=2e-6)


# ------------------------------------------------------------------------------------------------ the names
@pytest.mark.parametrize("override,message", [
    ("model.image_head=mpl", r"model.image_head 'mpl' is not one of linear, none, mlp, blocks:N \(did you mean 'mlp'"),
    ("model.text_head=none", r"model.text_head 'none' is not one of linear, mlp.*none and blocks:N are image heads"),
    ("model.text_head=blocks:2", r"model.text_head 'blocks:2' is not one of linear, mlp"),
    ("model.image_head=blocks", r"model.image_head 'blocks' needs a number of blocks of at least 1, e.g. blocks:2"),
    ("model.image_head=blocks:0", r"model.image_head 'blocks:0' needs a number of blocks"),
    ("model.head_mlp_activation=tanh", r"model.head_mlp_activation 'tanh' is not one of gelu, relu, silu"),
    ("model.head_mlp_dropout=1.0", r"'model.head_mlp_dropout' must be at least 0 and below 1"),
    ("model.head_mlp_depth=0", r"'model.head_mlp_depth' must be at least 1"),
    ("model.head_mlp_width=-1", r"'model.head_mlp_width' must be 0 or more \(0: 4 x the tower's output width\)"),
    ("model.head_mlp_residual=maybe", r"'model.head_mlp_residual' wants bool"),
])
def test_bad_head_settings_are_one_line_naming_the_key(override, message):
    from locktune.config import load_config

    with pytest.raises(LocktuneError, match=message) as error:
        load_config(overrides=[override])
    assert "\n" not in str(error.value)


def test_registry_and_config_list_the_same_names_and_refuse_in_one_line():
    from locktune.config import IMAGE_HEADS, TEXT_HEADS, HEAD_ACTIVATIONS, load_config
    from locktune.model.heads import ACTIVATIONS, build_head, head_names, head_reads, parse_head_name

    assert sorted(IMAGE_HEADS) == sorted(head_names("image")) and sorted(TEXT_HEADS) == sorted(head_names("text"))
    assert tuple(ACTIVATIONS) == HEAD_ACTIVATIONS
    config = load_config(overrides=["model.image_head=mlp", "model.text_head=mlp", "model.head_mlp_residual=false"])
    assert (config.model.image_head, config.model.text_head, config.model.head_mlp_residual) == ("mlp", "mlp", False)
    assert parse_head_name("blocks:3") == ("blocks", 3) and head_reads("blocks:3") == "tokens"
    assert head_reads("mlp") == head_reads("linear") == "pooled"
    for name, side, message in [("fancy", "image", r"unknown head 'fancy'; valid: blocks, linear, mlp, none"),
                                ("none", "text", r"model.text_head 'none' is for the image side only; valid on "
                                                 r"the text side: linear, mlp"),
                                ("mlp:2", "image", r"head 'mlp:2' should be written mlp"),
                                ("blocks:x", "image", r"the count after 'blocks:' must be a whole number")]:
        with pytest.raises(LocktuneError, match=message) as error:
            build_head(name, 8, 4, ModelConfig(), side=side)
        assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------- paired seeds
def test_linear_heads_draw_what_they_always_drew():
    """Today's draw, written out: kaiming_uniform(a=sqrt(5)) from a generator seeded by head_seed(seed, side)."""
    from locktune.model.heads import LinearHead
    from locktune.model.two_tower import head_seed

    model = net("linear", "linear", seed=5)
    assert sorted(k for k in model.state_dict() if "projection" in k) == ["image_projection.weight",
                                                                         "text_projection.weight"]
    assert isinstance(model.image_projection, torch.nn.Linear) and isinstance(model.image_projection, LinearHead)
    for salt, head in ((0, model.image_projection), (1, model.text_projection)):
        weight = torch.empty_like(head.weight)
        torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=torch.Generator().manual_seed(
            head_seed(5, salt)))
        assert torch.equal(head.weight, weight) and head.bias is None


def test_same_seed_gives_the_same_mlp_heads_in_every_arm():
    locked, scratch, mixed = net(setting="Lu", width=64), net(setting="uu", width=64), net(setting="Uu", width=64)
    for name, value in locked.image_projection.state_dict().items():
        assert torch.equal(value, scratch.image_projection.state_dict()[name]), name
        assert torch.equal(value, mixed.image_projection.state_dict()[name]), name
    for name, value in locked.text_projection.state_dict().items():
        assert torch.equal(value, scratch.text_projection.state_dict()[name]), name
    other = net(seed=1, width=64)
    assert not torch.equal(other.image_projection.layers[0].up.weight, locked.image_projection.layers[0].up.weight)
    # nn.Linear's default distributions: weights and biases within 1/sqrt(fan_in); norms start as the identity.
    up = locked.image_projection.layers[0].up
    bound = 1 / math.sqrt(up.in_features)
    assert up.weight.abs().max() <= bound and up.bias.abs().max() <= bound and up.bias.abs().max() > 0.9 * bound
    norm = locked.image_projection.layers[0].norm
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()


def test_every_head_parameter_learns_at_the_head_rate():
    from locktune.config import RunConfig
    from locktune.train.trainer import _optimizer

    model = net(width=16)
    config = RunConfig()
    config.train.lr, config.train.head_lr_multiplier = 1e-4, 10.0
    optimizer = _optimizer(model, config)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    heads = [p for n, p in model.named_parameters() if n.startswith(("image_projection", "text_projection"))]
    assert len(heads) == 2 * 10 and all(rate[id(p)] == pytest.approx(1e-3) for p in heads)
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] for p in group["params"]}
    norms = [p for n, p in model.named_parameters() if "norm" in n and n.startswith("image_projection")]
    assert norms and not any(id(p) in decayed for p in norms)  # norms and biases are not decayed


# ----------------------------------------------------------------------------------------- the ways out
FRESH = """
import sys, numpy as np
import locktune
from PIL import Image
model = locktune.load(sys.argv[1])
np.save(sys.argv[3], np.concatenate([model.encode_text(["a red square", "tree"]),
                                     model.encode_image(Image.open(sys.argv[2]))]))
"""


@pytest.mark.slow  # ~15 s: a fresh interpreter imports torch and locktune
def test_mlp_heads_save_and_load_in_a_fresh_process(tmp_path):
    from test_api import shapes_images

    from locktune.api import LitModel
    from locktune.saved_model import load_pretrained, state_equal

    model = LitModel(net(residual=False, depth=2, activation="silu"))
    folder = model.save(tmp_path / "saved")
    manifest = json.loads((folder / "locktune_model.json").read_text())
    assert manifest["model"]["image_head"] == manifest["model"]["text_head"] == "mlp"
    assert manifest["model"]["head_mlp_residual"] is False and manifest["model"]["head_mlp_depth"] == 2
    assert state_equal(model.net, load_pretrained(folder))
    image = tmp_path / "red.png"
    shapes_images()["red"].save(image)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", FRESH, str(folder), str(image), str(tmp_path / "out.npy")], check=True,
                   env=env, timeout=120)
    here = np.concatenate([model.encode_text(["a red square", "tree"]), model.encode_image(image)])
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), here, atol=1e-6)


def test_a_folder_naming_an_unknown_head_is_refused_in_one_line(tmp_path):
    from locktune.api import LitModel
    from locktune.saved_model import load_pretrained

    folder = LitModel(net()).save(tmp_path / "saved")
    path = folder / "locktune_model.json"
    manifest = json.loads(path.read_text())
    manifest["model"]["text_head"] = "kan"
    path.write_text(json.dumps(manifest))
    with pytest.raises(LocktuneError, match=r"locktune_model.json': model.text_head 'kan' is not one of linear, "
                                            r"mlp.*upgrade locktune") as error:
        load_pretrained(folder)
    assert "\n" not in str(error.value)
    manifest["model"]["text_head"], manifest["model"]["head_mlp_width"] = "mlp", 10**7
    path.write_text(json.dumps(manifest))
    with pytest.raises(LocktuneError, match=r"model.head_mlp_width = 10000000 is above the limit 65536"):
        load_pretrained(folder)


# The image side (TorchScript exporter) takes seconds; the text side goes through torch.export (~25 s): slow.
@pytest.mark.parametrize("part", ["image", pytest.param("text", marks=pytest.mark.slow)])
def test_onnx_export_of_mlp_heads_matches_pytorch(tmp_path, part):
    import onnxruntime as ort
    from locktune.export.onnx import export_onnx

    model = net(activation="gelu", depth=2, width=48)
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 64, 64)  # a batch size other than the one exported with
    tokens = model.tokenize(["a red square", "tree", "a blue circle on a long caption that is cut off here"])
    with torch.no_grad():
        ref = (model.encode_image(pixels) if part == "image" else model.encode_text(tokens["ids"], tokens["mask"]))
    session = ort.InferenceSession(str(export_onnx(model, tmp_path, parts=(part,))[part]))
    inputs = {"pixels": pixels.numpy()} if part == "image" else {k: tokens[k].numpy() for k in ("ids", "mask")}
    out = session.run(None, inputs)[0]
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4)
    assert not np.allclose(out[0], out[1], atol=1e-3)  # the inputs really differ, so the check means something


@pytest.mark.parametrize("heads,named", [(("linear", "mlp"), "text head 'mlp'"),
                                         (("mlp", "linear"), "image head 'mlp'")])
def test_transformers_export_refuses_a_non_linear_head_in_one_line(tmp_path, heads, named):
    """Refused first, before the towers are looked at (the message names the head, whatever the towers)."""
    from locktune.export.transformers_dual import export_dual_encoder

    model = net(*heads, width=16)
    with pytest.raises(LocktuneError, match=rf"cannot hold the {named}; use --format locktune .* or --onnx") as error:
        export_dual_encoder(model, tmp_path / "dual")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "dual").exists()
