"""blocks:N heads, token outputs and cls+mean pooling, each checked against a computation written out here."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hf_tiny import SIZE, save_vision


def _layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()


def _linear(x, layer):
    out = x @ layer.weight.double().T
    return out if layer.bias is None else out + layer.bias.double()


def _reference(head, tokens: torch.Tensor) -> torch.Tensor:
    """The blocks head in float64, from the formulas: projection, learned class token, pre-LN blocks (softmax
    attention, exact GELU), final norm, [x_0, mean x_1..] and the output map."""
    x = _linear(tokens.double(), head.input)
    if head.cls_token is not None:
        x = torch.cat([head.cls_token.double().expand(len(x), -1, -1), x], dim=1)
    for block in head.blocks:
        b, t, w = x.shape
        h = block.heads
        qkv = _linear(_layer_norm(x, block.norm1), block.qkv)
        q, k, v = (qkv[..., i * w:(i + 1) * w].reshape(b, t, h, w // h).transpose(1, 2) for i in range(3))
        scores = q @ k.transpose(-1, -2) / math.sqrt(w // h)
        weights = torch.exp(scores - scores.max(-1, keepdim=True).values)
        weights = weights / weights.sum(-1, keepdim=True)
        x = x + _linear((weights @ v).transpose(1, 2).reshape(b, t, w), block.proj)
        hidden = _linear(_layer_norm(x, block.norm2), block.fc1)
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
        x = x + _linear(hidden, block.fc2)
    x = _layer_norm(x, head.norm)
    return _linear(torch.cat([x[:, 0], x[:, 1:].mean(1)], dim=-1), head.output)


def _head(has_cls: bool, width: int = 16, heads: int = 4, in_dim: int = 12, seed: int = 0):
    from locktune.config import ModelConfig
    from locktune.model.token_blocks import TokenBlocksHead

    config = ModelConfig(head_blocks_width=width, head_blocks_heads=heads)
    head = TokenBlocksHead(in_dim, 8, 2, config)
    head.bind_tower(SimpleNamespace(token_dim=in_dim, has_cls_token=has_cls, name="fake"))
    head.init_weights(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # norms away from the identity, so the reference checks their use too
        g = torch.Generator().manual_seed(seed + 1)
        for module in head.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=g))
    return head


@pytest.mark.parametrize("has_cls", [True, False])
def test_blocks_head_matches_a_float64_reference(has_cls):
    head = _head(has_cls)
    assert (head.cls_token is None) == has_cls and head.reads == "tokens" and head.out_dim == 8
    tokens = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(7))
    out = head(tokens)
    assert out.shape == (3, 8)
    torch.testing.assert_close(out.double(), _reference(head, tokens), rtol=1e-5, atol=1e-5)
    # Outside autograd a long input is embedded in slices: the same numbers.
    import locktune.model.token_blocks as module

    with torch.no_grad():
        module.INFERENCE_ROWS, saved = 2, module.INFERENCE_ROWS
        try:
            torch.testing.assert_close(head(tokens), out.detach(), rtol=1e-6, atol=1e-6)
        finally:
            module.INFERENCE_ROWS = saved


def test_blocks_head_draws_the_same_weights_from_the_same_seed_and_refuses_bad_shapes():
    from locktune.config import ModelConfig
    from locktune.errors import LocktuneError
    from locktune.model.token_blocks import TokenBlocksHead

    a, b = _head(False, seed=3), _head(False, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(LocktuneError, match="head_blocks_heads"):
        TokenBlocksHead(12, 8, 1, ModelConfig(head_blocks_width=10, head_blocks_heads=4))
    with pytest.raises(LocktuneError, match="tokens"):
        a(torch.randn(2, 12))
    with pytest.raises(LocktuneError, match="gives 7"):
        a.bind_tower(SimpleNamespace(token_dim=7, has_cls_token=True, name="other"))


@pytest.fixture(scope="module")
def vision_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision")
    return {kind: save_vision(kind, root / kind) for kind in ("dinov2", "siglip_vision")}


def test_cls_mean_is_the_class_token_beside_the_patch_mean(vision_folders):
    from transformers import Dinov2Model

    from locktune.towers.image import build_image_tower

    folder = vision_folders["dinov2"]
    tower = build_image_tower(f"hf:{folder}", pretrained=True, pool="cls+mean").eval()
    pixels = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = Dinov2Model.from_pretrained(folder).eval()(pixel_values=pixels).last_hidden_state
        expected = torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], dim=-1)  # 1 class token, 16 patches
        assert tower.output_dim == 2 * hidden.shape[-1] == 64
        torch.testing.assert_close(tower(pixels), expected)
        # Its tokens: the whole last hidden state, class token first.
        assert tower.has_cls_token and tower.token_dim == 32
        torch.testing.assert_close(tower.tokens(pixels), hidden)
    assert tower.cache_identity()["pool"] == "cls+mean"  # another pooling is another cache entry


def test_register_tokens_are_dropped_from_the_tokens(tmp_path):
    import transformers as t

    from locktune.towers.image import build_image_tower

    torch.manual_seed(0)
    model = t.Dinov2WithRegistersModel(t.Dinov2WithRegistersConfig(
        image_size=SIZE, patch_size=8, num_hidden_layers=1, num_attention_heads=2, hidden_size=32,
        intermediate_size=64, num_register_tokens=3))
    model.save_pretrained(tmp_path)
    t.BitImageProcessorPil(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}).save_pretrained(
        tmp_path)
    tower = build_image_tower(f"hf:{tmp_path}", pretrained=True, pool="cls+mean").eval()
    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        hidden = t.Dinov2WithRegistersModel.from_pretrained(tmp_path).eval()(pixel_values=pixels).last_hidden_state
        assert hidden.shape[1] == 1 + 3 + 16
        torch.testing.assert_close(tower.tokens(pixels), torch.cat([hidden[:, :1], hidden[:, 4:]], dim=1))
        torch.testing.assert_close(tower(pixels), torch.cat([hidden[:, 0], hidden[:, 4:].mean(1)], dim=-1))


def test_cls_mean_is_refused_in_one_line_without_a_class_token(vision_folders):
    from locktune.errors import LocktuneError
    from locktune.towers.image import build_image_tower

    with pytest.raises(LocktuneError, match="no class token") as error:
        build_image_tower(f"hf:{vision_folders['siglip_vision']}", pretrained=True, pool="cls+mean")
    assert "\n" not in str(error.value)
    with pytest.raises(LocktuneError, match="does not apply to the bundled tower"):
        build_image_tower("mobilenet_v2", pretrained=False, pool="cls+mean")


def test_bundled_cnn_tokens_are_the_last_feature_map():
    from locktune.towers.image import build_image_tower

    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    for name in ("mobilenet_v2", "efficientnet_lite0"):
        tower = build_image_tower(name, pretrained=False).eval()
        with torch.no_grad():
            tokens = tower.tokens(pixels)
            assert tokens.shape == (1, 16, 1280) and not tower.has_cls_token  # 4 x 4 at 128 px
            # Row-major positions of the map whose mean the tower's own pooling takes.
            torch.testing.assert_close(tokens.mean(1), tower(pixels), rtol=1e-5, atol=1e-5)


def test_tower_description_names_the_tokens_and_the_pooled_width(vision_folders):
    from locktune.towers.describe import describe_tower

    facts = describe_tower(f"hf:{vision_folders['dinov2']}", pool="cls+mean")
    assert facts.output_dim == 64 and facts.pool == "cls+mean"
    assert facts.tokens == f"17 x 32 at {SIZE} px, class token first"
