"""`timm:` and `open_clip:` image towers, checked against the libraries themselves.

Weights are tiny random models saved to files (and to a fake Hugging Face cache), so nothing is downloaded.
Each test needs timm or open_clip, which need torchvision: PyPI's torchvision does not import beside the
project's CPU torch, so these tests skip there and run where both import (a GPU machine, or torch 2.14.1 +
torchvision 0.29.1).  The tests of the missing-package message run everywhere.
"""

from __future__ import annotations

import importlib.abc
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from locktune.errors import LocktuneError
from locktune.towers.image import build_image_tower

TIMM_REASON = ("timm needs torchvision, whose PyPI build does not import beside the project's CPU torch; runs where "
               "timm imports (a GPU machine, or torch 2.14.1 + torchvision 0.29.1)")
OPEN_CLIP_REASON = TIMM_REASON.replace("timm", "open_clip")
TINY_CLIP = "locktune-tiny-clip"  # an open_clip architecture registered by these tests (32 px, 16-d embedding)
TINY_CLIP_CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                                    "patch_size": 8},
                    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
# (width, height): square, landscape, portrait, very tall, smaller than the crop
SIZES = [(200, 200), (320, 240), (240, 333), (64, 48), (90, 300)]


def need(module: str, reason: str):
    """pytest.importorskip, also skipping where the package is installed but torchvision's operators fail."""
    try:
        return pytest.importorskip(module, reason=reason)
    except (RuntimeError, OSError, AttributeError) as error:
        pytest.skip(f"{reason} ({type(error).__name__}: {str(error).splitlines()[0][:120]})")


def images(sizes=SIZES) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def save_safetensors(state: dict, path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
    return str(path)


def fake_hub_repo(cache, repo_id: str, files: dict) -> None:
    """A repo as the Hugging Face cache holds it after `hf download`: refs/main -> snapshots/COMMIT/files."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, write in files.items():
        write(snapshot / name)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for this test, offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LOCKTUNE_ALLOW_DOWNLOAD", raising=False)
    return cache


def run_config(run_dir, image_tower: str, setting: str, image_size: int = 0):
    """Two steps of 8 pairs; a `U`/`L` text tower is the bundled MiniLM, a `u` one a one-layer CLIP."""
    from tiny_configs import tiny_run

    config = tiny_run(run_dir, steps=2, train={"batch_size": 8, "checkpoint_every": 100})
    config.model.setting, config.model.image_tower, config.model.image_size = setting, image_tower, image_size
    config.model.text_tower = "clip" if setting[1] == "u" else "minilm"
    return config


def train_save_reload(tmp_path, emoji_pairs, image_tower: str, setting: str, image_size: int = 0):
    """Two training steps; the image tower is bit-identical after them when locked and changed when not; the
    saved model reloads to the same weights, preprocessing and image embeddings."""
    from locktune.saved_model import load_pretrained, save_pretrained, state_equal
    from locktune.towers.setting import unwrap
    from locktune.train.trainer import train

    config = run_config(tmp_path / setting, image_tower, setting, image_size)
    before = build_image_tower(image_tower, pretrained=setting[0] != "u").state_dict()
    result = train(config, pairs=emoji_pairs)
    assert result.steps_done == 2 and all(np.isfinite(result.losses))
    after = unwrap(result.model.image_tower).state_dict()
    assert before.keys() == after.keys()
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert unchanged == (setting[0] == "L"), "a locked tower never changes; an unlocked one trains"

    folder = save_pretrained(result.model, tmp_path / f"saved-{setting}")
    loaded = load_pretrained(folder)
    assert state_equal(result.model, loaded)
    assert loaded.preprocess == result.model.preprocess
    assert loaded.image_tower.__class__ is result.model.image_tower.__class__
    pixels = torch.stack([result.model.preprocess(im) for im in images()])
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(result.model.encode_image(pixels), loaded.encode_image(pixels))
    return result, loaded


# ---------------------------------------------------------------- missing or broken packages (run everywhere)


@pytest.mark.parametrize("name, module, extra", [("timm:vit_tiny_patch16_224", "timm", "timm"),
                                                 ("open_clip:ViT-B-32@laion2b_s34b_b79k", "open_clip", "open-clip")])
def test_missing_package_names_the_extra(monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if not installed
    with pytest.raises(LocktuneError) as caught:
        build_image_tower(name, pretrained=True)
    message = str(caught.value)
    assert f"pip install 'locktune[{extra}]'" in message and "\n" not in message


class _BrokenImport(importlib.abc.MetaPathFinder):
    """Imports of one module fail the way torchvision's compiled operators do beside a CPU-only torch."""

    def __init__(self, module: str):
        self.module = module

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.module:
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


@pytest.mark.parametrize("name, module", [("timm:vit_tiny_patch16_224", "timm"),
                                          ("open_clip:ViT-B-32@laion2b_s34b_b79k", "open_clip")])
def test_package_that_does_not_import_is_one_line(monkeypatch, name, module):
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenImport(module)] + sys.meta_path)
    with pytest.raises(LocktuneError) as caught:
        build_image_tower(name, pretrained=True)
    message = str(caught.value)
    assert "does not import" in message and "torchvision" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------------- timm


@pytest.fixture(scope="module")
def timm_checkpoints(tmp_path_factory):
    """Tiny timm models (random weights, seeded) saved as a user would: with the classifier, without it, and as
    a torch.save file.  Returns {label: (model name, file, the model it came from)}."""
    timm = need("timm", TIMM_REASON)
    folder = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    found = {}
    for name in ("test_vit", "test_resnet", "test_convnext"):
        model = timm.create_model(name, pretrained=False).eval()  # with its 1000-class head, as timm's hub holds
        found[name] = (name, save_safetensors(model.state_dict(), folder / f"{name}.safetensors"), model)
    headless = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    found["test_vit-headless"] = ("test_vit", save_safetensors(headless.state_dict(), folder / "headless.safetensors"),
                                  headless)
    torch.save({"state_dict": found["test_resnet"][2].state_dict()}, folder / "resnet.pth")
    found["test_resnet-pth"] = ("test_resnet", str(folder / "resnet.pth"), found["test_resnet"][2])
    return found


def timm_reference(timm, model):
    """The source model without its classifier: what `timm.create_model(..., num_classes=0)` gives."""
    reference = timm.create_model(model.pretrained_cfg["architecture"], pretrained=False, num_classes=0).eval()
    state = {k: v for k, v in model.state_dict().items() if k in reference.state_dict()}
    reference.load_state_dict(state)
    return reference


@pytest.mark.parametrize("label", ["test_vit", "test_resnet", "test_convnext", "test_vit-headless",
                                   "test_resnet-pth"])
def test_timm_file_weights_load_and_u_is_the_same_architecture(timm_checkpoints, label):
    timm = need("timm", TIMM_REASON)
    name, path, source = timm_checkpoints[label]
    tower = build_image_tower(f"timm:{name}@{path}", pretrained=True).eval()
    reference = timm_reference(timm, source)
    assert tower.output_dim == reference.num_features
    assert str(tower.weights_file) == path and tower.weights_fingerprint() != "random"
    for key, value in reference.state_dict().items():
        assert torch.equal(tower.model.state_dict()[key], value), key
    pixels = torch.randn(2, 3, tower.native.image_size, tower.native.image_size)
    with torch.no_grad():
        assert torch.allclose(tower(pixels), reference(pixels), atol=1e-6)

    scratch = build_image_tower(f"timm:{name}@{path}", pretrained=False)
    assert scratch.weights_fingerprint() == "random" and scratch.output_dim == tower.output_dim
    assert {k: v.shape for k, v in scratch.state_dict().items()} == {k: v.shape for k, v in tower.state_dict().items()}
    assert scratch.native == tower.native
    trained = tower.state_dict()
    assert not all(torch.equal(v, trained[k]) for k, v in scratch.state_dict().items() if v.is_floating_point())


def test_timm_checkpoint_of_another_architecture_is_one_line(timm_checkpoints):
    need("timm", TIMM_REASON)
    with pytest.raises(LocktuneError) as caught:
        build_image_tower(f"timm:test_vit@{timm_checkpoints['test_resnet'][1]}", pretrained=True)
    assert "a checkpoint of timm's 'test_vit'" in str(caught.value) and "\n" not in str(caught.value)


def test_timm_unknown_model_or_tag_is_one_line(timm_checkpoints):
    need("timm", TIMM_REASON)
    for name, pretrained in (("timm:no_such_model", False), ("timm:test_vit.no_such_tag", True),
                             ("timm:hf-hub:timm/test_vit.r160_in1k", True)):
        with pytest.raises(LocktuneError) as caught:
            build_image_tower(name, pretrained=pretrained)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("label", ["test_vit", "test_resnet"])
def test_timm_preprocess_is_timms_eval_transform(timm_checkpoints, label):
    """test_vit: bicubic, crop_pct 0.95 (resize 168, crop 160); test_resnet: bilinear."""
    timm = need("timm", TIMM_REASON)
    import timm.data

    name, path, _ = timm_checkpoints[label]
    tower = build_image_tower(f"timm:{name}@{path}", pretrained=True)
    reference = timm.data.create_transform(**timm.data.resolve_data_config({}, model=tower.model))
    ours = tower.preprocess(0)
    assert ours.resize == "shortest_edge" and ours.resize_to == 168 and ours.image_size == 160
    for image in images():
        assert (ours(image) - reference(image)).abs().max() < 1e-5, image.size


def test_timm_pools(timm_checkpoints):
    timm = need("timm", TIMM_REASON)
    name, path, source = timm_checkpoints["test_vit"]
    reference = timm_reference(timm, source)
    pixels = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        tokens = reference.forward_features(pixels)
        expected = {"auto": reference(pixels), "pooler": reference(pixels), "cls": tokens[:, 0],
                    "mean": tokens[:, reference.num_prefix_tokens:].mean(1)}
        for pool, want in expected.items():
            tower = build_image_tower(f"timm:{name}@{path}", pretrained=True, pool=pool).eval()
            assert torch.allclose(tower(pixels), want, atol=1e-6), pool
            assert tower.cache_identity()["pool"] == ("pooler" if pool == "auto" else pool)
    name, path, source = timm_checkpoints["test_resnet"]
    with pytest.raises(LocktuneError, match="no class token"):
        build_image_tower(f"timm:{name}@{path}", pretrained=True, pool="cls")
    tower = build_image_tower(f"timm:{name}@{path}", pretrained=True, pool="mean").eval()
    with torch.no_grad():  # a ResNet's own pooling is the spatial mean
        assert torch.allclose(tower(pixels), timm_reference(timm, source)(pixels), atol=1e-5)


def test_timm_other_image_sizes(timm_checkpoints):
    """A ViT runs at another size (position embedding resampled); one with a fixed size is one line."""
    need("timm", TIMM_REASON)
    name, path, _ = timm_checkpoints["test_vit"]
    tower = build_image_tower(f"timm:{name}@{path}", pretrained=True).eval()
    at_64 = tower.preprocess(64)
    assert at_64.image_size == 64 and at_64.resize_to == round(168 * 64 / 160)
    assert tower(torch.zeros(1, 3, 64, 64)).shape == (1, tower.output_dim)
    fixed = build_image_tower("timm:test_vit_relpos", pretrained=False)
    with pytest.raises(LocktuneError, match="does not run at 64 px"):
        fixed.preprocess(64)
    assert fixed.preprocess(0).image_size == 160


def test_timm_default_hub_repo_from_the_cache(timm_checkpoints, hub_cache):
    need("timm", TIMM_REASON)
    _, path, source = timm_checkpoints["test_vit"]
    with pytest.raises(LocktuneError) as caught:
        build_image_tower("timm:test_vit", pretrained=True)
    message = str(caught.value)
    assert "timm/test_vit.r160_in1k" in message and "hf download" in message and "\n" not in message

    data = open(path, "rb").read()
    fake_hub_repo(hub_cache, "timm/test_vit.r160_in1k", {"model.safetensors": lambda p: p.write_bytes(data)})
    tower = build_image_tower("timm:test_vit", pretrained=True)
    assert str(hub_cache) in str(tower.weights_file)
    assert torch.equal(tower.model.pos_embed, source.pos_embed)
    scratch = build_image_tower("timm:test_vit", pretrained=False)  # `u` never reads the hub
    assert scratch.native == tower.native and scratch.state_dict().keys() == tower.state_dict().keys()


def test_timm_named_hub_repo_brings_its_config(timm_checkpoints, hub_cache):
    """A fine-tune pushed with timm's push_to_hub: its config.json (here: squash to 160 px, bilinear, its own
    mean/std) is the preprocessing, for L and u alike, and matches timm's transform for that config."""
    timm = need("timm", TIMM_REASON)
    import timm.data

    _, path, source = timm_checkpoints["test_vit-headless"]
    data = open(path, "rb").read()
    config = {"architecture": "test_vit", "num_classes": 0, "num_features": 64,
              "pretrained_cfg": {"input_size": [3, 160, 160], "crop_pct": 1.0, "crop_mode": "squash",
                                 "interpolation": "bilinear", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.25],
                                 "num_classes": 0, "classifier": "head", "hf_hub_id": "someone/tiny-vit"}}
    fake_hub_repo(hub_cache, "someone/tiny-vit", {"model.safetensors": lambda p: p.write_bytes(data),
                                                  "config.json": lambda p: p.write_text(json.dumps(config))})
    tower = build_image_tower("timm:test_vit@someone/tiny-vit", pretrained=True)
    assert torch.equal(tower.model.pos_embed, source.pos_embed)
    ours = tower.preprocess(0)
    assert (ours.resize, ours.resample, ours.mean) == ("stretch", "bilinear", (0.4, 0.5, 0.6))
    reference = timm.data.create_transform(**timm.data.resolve_data_config({}, model=tower.model))
    for image in images():
        assert (ours(image) - reference(image)).abs().max() < 1e-5, image.size
    scratch = build_image_tower("timm:test_vit@someone/tiny-vit", pretrained=False)
    assert scratch.native == tower.native


@pytest.mark.parametrize("setting", ["LU", "UU"])
def test_timm_tower_trains_saves_and_reloads(tmp_path, emoji_pairs, timm_checkpoints, setting):
    need("timm", TIMM_REASON)
    _, path, _ = timm_checkpoints["test_vit"]
    result, loaded = train_save_reload(tmp_path, emoji_pairs, f"timm:test_vit@{path}", setting, image_size=64)
    assert result.model.preprocess.image_size == 64


# ----------------------------------------------------------------------------------------------- open_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip architecture, registered, and a random CLIP of it saved as .safetensors and .pt."""
    open_clip = need("open_clip", OPEN_CLIP_REASON)
    folder = tmp_path_factory.mktemp("open_clip")
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    model, _, transform = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None)
    model.eval()
    torch.save(model.state_dict(), folder / "tiny.pt")
    return {"model": model, "transform": transform, "pt": str(folder / "tiny.pt"),
            "safetensors": save_safetensors(model.state_dict(), folder / "tiny.safetensors")}


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_open_clip_file_weights_load_and_u_is_the_same_architecture(tiny_clip, kind):
    need("open_clip", OPEN_CLIP_REASON)
    reference = tiny_clip["model"]
    tower = build_image_tower(f"open_clip:{TINY_CLIP}@{tiny_clip[kind]}", pretrained=True).eval()
    assert tower.output_dim == TINY_CLIP_CONFIG["embed_dim"]
    for key, value in reference.visual.state_dict().items():
        assert torch.equal(tower.visual.state_dict()[key], value), key
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tower(pixels), reference.encode_image(pixels))

    scratch = build_image_tower(f"open_clip:{TINY_CLIP}@{tiny_clip[kind]}", pretrained=False)
    assert scratch.weights_fingerprint() == "random" and scratch.output_dim == tower.output_dim
    assert {k: v.shape for k, v in scratch.state_dict().items()} == {k: v.shape for k, v in tower.state_dict().items()}
    assert scratch.native == tower.native
    assert not torch.equal(scratch.visual.proj, tower.visual.proj)


def test_open_clip_preprocess_is_open_clips_transform(tiny_clip):
    need("open_clip", OPEN_CLIP_REASON)
    tower = build_image_tower(f"open_clip:{TINY_CLIP}@{tiny_clip['safetensors']}", pretrained=True)
    ours = tower.preprocess(0)
    assert (ours.resize, ours.image_size, ours.resize_to) == ("shortest_edge", 32, 32)
    for image in images():
        assert (ours(image) - tiny_clip["transform"](image)).abs().max() < 1e-5, image.size


def test_open_clip_errors_are_one_line(tiny_clip, tmp_path):
    open_clip = need("open_clip", OPEN_CLIP_REASON)
    visual_only = save_safetensors({f"visual.{k}": v for k, v in tiny_clip["model"].visual.state_dict().items()},
                                   tmp_path / "visual.safetensors")
    for name, pretrained, words in (
            ("open_clip:no-such-arch@x", True, "no architecture"),
            (f"open_clip:{TINY_CLIP}@no_such_tag", True, "neither a checkpoint file nor an open_clip tag"),
            (f"open_clip:{TINY_CLIP}", True, "names no weights"),
            (f"open_clip:{TINY_CLIP}@{visual_only}", True, "a checkpoint of open_clip's"),
            ("open_clip:hf-hub:timm/ViT-B-16-SigLIP", True, "open_clip:ARCH@TAG")):
        with pytest.raises(LocktuneError) as caught:
            build_image_tower(name, pretrained=pretrained)
        assert words in str(caught.value) and "\n" not in str(caught.value), name
    with pytest.raises(LocktuneError, match="image_pool must be auto"):
        build_image_tower(f"open_clip:{TINY_CLIP}@{tiny_clip['pt']}", pretrained=True, pool="cls")
    tower = build_image_tower(f"open_clip:{TINY_CLIP}@{tiny_clip['pt']}", pretrained=True)
    with pytest.raises(LocktuneError, match="does not run at 48 px"):  # a ViT with a fixed position embedding
        tower.preprocess(48)
    assert open_clip.list_models()  # the registry is intact


@pytest.fixture
def tiny_clip_tag(tiny_clip, hub_cache, monkeypatch):
    """An open_clip pretrained tag for the tiny architecture, as open_clip lists SigLIP's: squash, bilinear,
    mean/std 0.5 and QuickGELU, with its checkpoint in the (fake, offline) Hugging Face cache."""
    import open_clip.pretrained

    tag = {"hf_hub": "someone/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
           "interpolation": "bilinear", "resize_mode": "squash", "quick_gelu": True}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_CLIP, {"tinytag": tag})
    return hub_cache


def test_open_clip_tag_brings_its_preprocessing_and_quick_gelu(tiny_clip, tiny_clip_tag):
    open_clip = need("open_clip", OPEN_CLIP_REASON)
    with pytest.raises(LocktuneError) as caught:  # not in the cache yet
        build_image_tower(f"open_clip:{TINY_CLIP}@tinytag", pretrained=True)
    assert "someone/tiny-clip" in str(caught.value) and "\n" not in str(caught.value)

    data = open(tiny_clip["safetensors"], "rb").read()
    fake_hub_repo(tiny_clip_tag, "someone/tiny-clip", {"open_clip_model.safetensors": lambda p: p.write_bytes(data)})
    tower = build_image_tower(f"open_clip:{TINY_CLIP}@tinytag", pretrained=True).eval()
    assert str(tiny_clip_tag) in str(tower.weights_file)
    ours = tower.preprocess(0)
    assert (ours.resize, ours.resample, ours.mean, ours.std) == ("stretch", "bilinear", (0.5,) * 3, (0.5,) * 3)
    # open_clip's own tag path (it reads the same cache): same transform; same features once QuickGELU is used
    reference, _, transform = open_clip.create_model_and_transforms(TINY_CLIP, pretrained="tinytag",
                                                                    force_quick_gelu=True)
    for image in images():
        assert (ours(image) - transform(image)).abs().max() < 1e-5, image.size
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tower(pixels), reference.eval().encode_image(pixels))
        assert not torch.allclose(tower(pixels), tiny_clip["model"].encode_image(pixels)), "QuickGELU is in use"

    scratch = build_image_tower(f"open_clip:{TINY_CLIP}@tinytag", pretrained=False)  # `u`: same tag config
    assert scratch.native == tower.native and scratch.quick_gelu


@pytest.mark.parametrize("setting", ["LU", "UU"])
def test_open_clip_tower_trains_saves_and_reloads(tmp_path, emoji_pairs, tiny_clip, setting):
    need("open_clip", OPEN_CLIP_REASON)
    result, loaded = train_save_reload(tmp_path, emoji_pairs, f"open_clip:{TINY_CLIP}@{tiny_clip['pt']}", setting)
    assert result.model.preprocess.image_size == 32


def test_open_clip_saved_model_keeps_quick_gelu(tmp_path, emoji_pairs, tiny_clip, tiny_clip_tag):
    need("open_clip", OPEN_CLIP_REASON)
    data = open(tiny_clip["safetensors"], "rb").read()
    fake_hub_repo(tiny_clip_tag, "someone/tiny-clip", {"open_clip_model.safetensors": lambda p: p.write_bytes(data)})
    _, loaded = train_save_reload(tmp_path, emoji_pairs, f"open_clip:{TINY_CLIP}@tinytag", "Lu")
    from locktune.towers.setting import unwrap

    assert unwrap(loaded.image_tower).quick_gelu and loaded.preprocess.resize == "stretch"


# ---------------------------------------------------- the crop offset rounded as torchvision rounds it


@pytest.mark.parametrize("name, size", [("test_vit", (171, 500)), ("resnet18", (224, 224))])
def test_timm_preprocess_crop_offset_rounding(name, size):
    timm = need("timm", TIMM_REASON)
    import timm.data

    tower = build_image_tower(f"timm:{name}", pretrained=False)
    reference = timm.data.create_transform(**timm.data.resolve_data_config({}, model=tower.model))
    image = images([size])[0]
    assert (tower.preprocess(0)(image) - reference(image)).abs().max() < 1e-5
