"""Towers users bring (`hf:FOLDER`): tiny random-weight transformers models saved as save_pretrained leaves them.

Every number is checked against transformers itself (its image processors, its models' outputs), never
against what locktune printed before.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hf_tiny import SIZE, TEXT_KINDS, VISION_KINDS, save_text, save_vision
from locktune.config import RunConfig, load_config
from locktune.errors import LocktuneError

PAIRS = list(zip(VISION_KINDS, TEXT_KINDS + ("bert", "xlm_roberta")))  # every kind of each side at least once


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-zoo")
    folders = {kind: save_vision(kind, root / kind) for kind in VISION_KINDS}
    folders.update({kind: save_text(kind, root / kind) for kind in TEXT_KINDS})
    return folders


def hf_config(run_dir, image, text, setting="LU", steps=3, **model) -> RunConfig:
    config = RunConfig()
    config.model.setting, config.model.image_tower, config.model.text_tower = setting, f"hf:{image}", f"hf:{text}"
    config.model.max_text_len = 12
    for key, value in model.items():
        setattr(config.model, key, value)
    config.train.steps, config.train.batch_size, config.train.warmup_steps = steps, 8, 1
    config.train.checkpoint_every = 100
    config.data.image_workers = 0
    config.run_dir = str(run_dir)
    return config


def pictures() -> list[Image.Image]:
    """Opaque RGB pictures of three aspect ratios (transformers drops alpha; locktune composites on white)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(50, 30), (30, 70), (40, 40)]]


# --- preprocessing: identical to the model's own image processor -------------------------------------------

@pytest.mark.parametrize("kind", VISION_KINDS)
def test_preprocessing_matches_the_models_own_image_processor(zoo, kind):
    from transformers import AutoImageProcessor

    from locktune.towers.image import build_image_tower

    ours = build_image_tower(f"hf:{zoo[kind]}", pretrained=True).preprocess(0)
    theirs = AutoImageProcessor.from_pretrained(zoo[kind])
    for picture in pictures():
        expected = torch.as_tensor(np.asarray(theirs(picture, return_tensors="np")["pixel_values"][0]))
        assert ours(picture).shape == expected.shape == (3, SIZE, SIZE)
        torch.testing.assert_close(ours(picture), expected.float(), atol=2e-5, rtol=0)


def test_processor_fields_locktune_cannot_reproduce_are_one_line(zoo, tmp_path):
    from locktune.towers.image import build_image_tower

    folder = shutil.copytree(zoo["vit"], tmp_path / "vit")
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**processor, "do_pad": True}))
    with pytest.raises(LocktuneError, match="sets 'do_pad', a step locktune does not reproduce"):
        build_image_tower(f"hf:{folder}", pretrained=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({**processor, "size": {"height": 32, "width": 48}}))
    with pytest.raises(LocktuneError, match="not square"):
        build_image_tower(f"hf:{folder}", pretrained=True)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(LocktuneError, match="has no preprocessor_config.json"):
        build_image_tower(f"hf:{folder}", pretrained=True)


# --- pooling: what each choice means, computed from transformers' own outputs ------------------------------

def test_image_pooling_choices_match_transformers_outputs(zoo):
    from transformers import AutoModel

    from locktune.towers.image import build_image_tower

    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        vit = AutoModel.from_pretrained(zoo["vit"])(pixel_values=pixels)
        dino = AutoModel.from_pretrained(zoo["dinov2"])(pixel_values=pixels)
        conv = AutoModel.from_pretrained(zoo["convnext"])(pixel_values=pixels)
        for name, pool, expected in [
            ("vit", "cls", vit.last_hidden_state[:, 0]), ("vit", "pooler", vit.pooler_output),
            ("vit", "mean", vit.last_hidden_state[:, 1:].mean(1)), ("dinov2", "auto", dino.pooler_output),
            ("dinov2", "mean", dino.last_hidden_state[:, 1:].mean(1)),
            ("convnext", "mean", conv.last_hidden_state.mean(dim=(2, 3))), ("convnext", "auto", conv.pooler_output),
        ]:
            tower = build_image_tower(f"hf:{zoo[name]}", pretrained=True, pool=pool).eval()
            torch.testing.assert_close(tower(pixels), expected, atol=1e-6, rtol=0, msg=f"{name} {pool}")
    for name in ("siglip_vision", "convnext"):
        with pytest.raises(LocktuneError, match="has no class token"):
            build_image_tower(f"hf:{zoo[name]}", pretrained=True, pool="cls")


def test_a_classification_checkpoint_without_pooler_weights_never_pools_through_random_ones(tmp_path):
    import transformers as t

    from locktune.towers.image import build_image_tower

    folder = tmp_path / "vit-cls"
    t.ViTForImageClassification(t.ViTConfig(image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    t.ViTImageProcessorPil(size={"height": SIZE, "width": SIZE}).save_pretrained(folder)
    locked, scratch = (build_image_tower(f"hf:{folder}", pretrained=p) for p in (True, False))
    assert locked.pool == scratch.pool == "cls"  # auto: no trained pooler, so the class token
    assert locked.model.pooler is None and scratch.model.pooler is None
    with pytest.raises(LocktuneError, match="no pooled output with trained weights"):
        build_image_tower(f"hf:{folder}", pretrained=True, pool="pooler")


def _masked_mean(hidden, mask):
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1)


@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_text_pooling_choices_match_transformers_outputs(zoo, kind):
    import transformers as t

    from locktune.towers.text import build_text_tower
    from locktune.towers.text.base import TextTowerArgs

    reference = (t.T5EncoderModel if kind == "t5" else t.AutoModel).from_pretrained(zoo[kind]).eval()
    texts = ["a photo of a cat", "dog"]
    pools = ["mean", "cls", "eos"] + (["pooler"] if kind != "t5" else [])
    for pool in pools:
        tower = build_text_tower(f"hf:{zoo[kind]}", TextTowerArgs(pretrained=True, max_len=12, pool=pool)).eval()
        tokens = tower.tokenize(texts)
        with torch.no_grad():
            out = reference(input_ids=tokens["ids"], attention_mask=tokens["mask"])
            hidden = out.last_hidden_state
            expected = {"mean": _masked_mean(hidden, tokens["mask"]), "cls": hidden[:, 0],
                        "eos": hidden[torch.arange(2), tokens["mask"].sum(1) - 1],
                        "pooler": getattr(out, "pooler_output", None)}[pool]
            torch.testing.assert_close(tower(tokens["ids"], tokens["mask"]), expected, atol=1e-6, rtol=0)
    if kind == "t5":
        with pytest.raises(LocktuneError, match="has no pooled output"):
            build_text_tower(f"hf:{zoo[kind]}", TextTowerArgs(pretrained=True, max_len=12, pool="pooler"))


def test_sentence_transformers_folder_honours_its_pooling_config(zoo, tmp_path):
    from locktune.towers.text import build_text_tower
    from locktune.towers.text.base import TextTowerArgs

    folder = tmp_path / "st"
    shutil.copytree(zoo["bert"], folder / "0_Transformer")
    (folder / "1_Pooling").mkdir()
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    pooling = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert build_text_tower(f"hf:{folder}", TextTowerArgs(pretrained=True, max_len=12)).pool == "cls"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "pooling_mode_max_tokens": True}))
    with pytest.raises(LocktuneError, match="locktune pools one way"):
        build_text_tower(f"hf:{folder}", TextTowerArgs(pretrained=True, max_len=12))
    # An explicit choice wins over the folder's.
    assert build_text_tower(f"hf:{folder}", TextTowerArgs(pretrained=True, max_len=12, pool="mean")).pool == "mean"


# --- training: L, U and u mean the same for every kind -----------------------------------------------------

@pytest.mark.parametrize("image_kind,text_kind", PAIRS)
def test_train_LU_UU_uu_with_hugging_face_towers(zoo, tmp_path, emoji_pairs, image_kind, text_kind):
    from locktune.model import build_model
    from locktune.towers.setting import unwrap
    from locktune.train.trainer import train

    pretrained = build_model(load_config(None, [f"model.image_tower=hf:{zoo[image_kind]}",
                                                f"model.text_tower=hf:{zoo[text_kind]}"]).model)
    def weights(model):  # a locked tower's wrapper adds `.tower` to its names
        return {k.replace("image_tower.tower.", "image_tower."): v.clone() for k, v in model.state_dict().items()}

    start = weights(pretrained)
    for setting in ("LU", "UU", "uu"):
        config = hf_config(tmp_path / setting, zoo[image_kind], zoo[text_kind], setting)
        result = train(config, pairs=emoji_pairs)
        assert result.steps_done == 3 and all(np.isfinite(result.losses)), setting
        trained = weights(result.model)
        image = {k: v for k, v in trained.items() if k.startswith("image_tower.")}
        text = {k: v for k, v in trained.items() if k.startswith("text_tower.")}
        same_image = all(torch.equal(v, start[k]) for k, v in image.items())
        same_text = all(torch.equal(v, start[k]) for k, v in text.items())
        if setting == "LU":
            assert same_image and not same_text and result.image_forward_passes == len(emoji_pairs)
            assert type(result.model.image_tower).__name__ == "LockedTower"
        elif setting == "UU":
            assert not same_image and result.image_forward_passes == 3 * 8
        else:  # u: random weights, same architecture
            assert image.keys() == {k for k in start if k.startswith("image_tower.")}
            assert unwrap(result.model.image_tower).weights_fingerprint() == "random"


def test_a_changed_weight_never_reuses_the_cache(tmp_path):
    from locktune.cache.embedding_cache import cached_features
    from locktune.data.images import FileImages
    from locktune.towers.image import build_image_tower

    folder = save_vision("vit", tmp_path / "vit", seed=0)
    paths = []
    for i, picture in enumerate(pictures()):
        paths.append(tmp_path / f"{i}.png")
        picture.save(paths[-1])
    images = FileImages(paths)

    def embed(pool="auto"):
        tower = build_image_tower(f"hf:{folder}", pretrained=True, pool=pool)
        return cached_features(tower, tower.preprocess(0), images, workers=0)

    first = embed()
    assert first.computed and not embed().computed  # the second run reuses the entry
    assert embed("cls").computed  # another pooling is another entry
    save_vision("vit", folder, seed=1)  # same name, same architecture, other weights
    again = embed()
    assert again.computed and not torch.equal(again.features, first.features)


def test_resume_is_bit_identical_with_hugging_face_towers(zoo, tmp_path, emoji_pairs):
    from locktune.train.trainer import train

    for setting, image, text in [("LU", "vit", "bert"), ("UU", "dinov2", "xlm_roberta")]:
        def config(name):
            return hf_config(tmp_path / f"{setting}-{name}", zoo[image], zoo[text], setting, steps=4)

        whole = train(config("whole"), pairs=emoji_pairs)
        train(config("split"), pairs=emoji_pairs, stop_after=2)
        resumed = train(config("split"), pairs=emoji_pairs, resume=True)
        assert resumed.losses == whole.losses, setting  # BERT's dropout RNG restored too
        for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
            assert torch.equal(a, b), (setting, name)


def test_unlock_schedule_finds_layer_groups_in_a_hugging_face_vit(zoo, tmp_path, emoji_pairs):
    from locktune.model import build_model
    from locktune.train.trainer import train
    from locktune.train.unlock import layer_groups

    model = build_model(load_config(None, ["model.setting=UU", f"model.image_tower=hf:{zoo['vit']}",
                                           f"model.text_tower=hf:{zoo['bert']}"]).model)
    names = [g.name for g in layer_groups(model.image_tower)]
    # Stem (patch + position embeddings), one group per transformer block, then the final norm and pooler.
    assert names[0] == "model.embeddings" and names[-1] == "model.layernorm" and len(names) == 4
    assert [n.rsplit(".", 1)[1] for n in names[1:3]] == ["0", "1"], names
    config = hf_config(tmp_path / "unlock", zoo["vit"], zoo["bert"], "UU", steps=4)
    config.train.image_unlock_start, config.train.image_unlock_end = 1, 3
    assert len(train(config, pairs=emoji_pairs).losses) == 4


# --- saved models hold everything: a fresh process, no network, no original folders ------------------------

FRESH = """
import json, sys, numpy as np
import locktune
from PIL import Image
out = {}
for folder in sys.argv[2:]:
    model = locktune.load(folder)
    out[folder] = np.concatenate([model.encode_text(["a photo of a cat", "dog"]),
                                  model.encode_image(Image.open(sys.argv[1]))]).tolist()
print(json.dumps(out))
"""


def test_saved_models_load_in_a_fresh_process_without_the_original_folders(zoo, tmp_path):
    from locktune.api import LitModel
    from locktune.model import build_model

    picture = tmp_path / "picture.png"
    pictures()[1].save(picture)
    saved, here = [], {}
    for image_kind, text_kind in PAIRS:
        copies = tmp_path / f"originals-{image_kind}"
        image, text = (shutil.copytree(zoo[k], copies / k) for k in (image_kind, text_kind))
        config = load_config(None, ["model.setting=UU", f"model.image_tower=hf:{image}", f"model.text_tower=hf:{text}"])
        model = LitModel(build_model(config.model))
        folder = model.save(tmp_path / f"saved-{image_kind}-{text_kind}")
        here[str(folder)] = np.concatenate([model.encode_text(["a photo of a cat", "dog"]), model.encode_image(picture)])
        saved.append(str(folder))
        shutil.rmtree(copies)  # the saved folder alone must rebuild both towers
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", FRESH, str(picture), *saved], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    for folder in saved:
        np.testing.assert_allclose(np.asarray(fresh[folder]), here[folder], atol=1e-6, err_msg=folder)


# --- bad input: one line naming the tower and what to do -------------------------------------------------

def _cli_error(capsys, *overrides) -> str:
    from locktune.cli import main

    assert main(["towers", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_bad_tower_names_and_folders_are_one_line(zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "unknown kind 'hff:'" in _cli_error(capsys, "hff:bert")
    (tmp_path / "empty").mkdir()
    assert "has no config.json" in _cli_error(capsys, f"hf:{tmp_path / 'empty'}")
    assert "is not in the Hugging Face cache" in _cli_error(capsys, "hf:nobody/no-such-model")
    assert "no folder" in _cli_error(capsys, f"hf:{tmp_path / 'missing' / 'model'}")
    with pytest.raises(LocktuneError, match="unknown kind 'hff:'"):
        load_config(None, ["model.image_tower=hff:x"])
    with pytest.raises(LocktuneError, match="model.image_pool 'first'"):
        load_config(None, ["model.image_pool=first"])
    with pytest.raises(LocktuneError, match="model.text_pool 'max'"):
        load_config(None, ["model.text_pool=max"])


def test_a_tower_on_the_wrong_side_or_missing_parts_is_one_line(zoo, tmp_path):
    from locktune.model import build_model

    def build(image, text, setting="LU"):
        return build_model(load_config(None, [f"model.setting={setting}", f"model.image_tower=hf:{image}",
                                              f"model.text_tower=hf:{text}"]).model)

    with pytest.raises(LocktuneError, match="is a text model .* name it as model.text_tower"):
        build(zoo["bert"], zoo["bert"])
    with pytest.raises(LocktuneError, match="is not a text model .* name it as model.image_tower"):
        build(zoo["vit"], zoo["vit"])
    no_tokenizer = tmp_path / "bert-no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(zoo["bert"] / name, no_tokenizer / name)
    with pytest.raises(LocktuneError, match="holds no tokenizer files .*tokenizer.save_pretrained"):
        build(zoo["vit"], no_tokenizer)
    wrong_weights = shutil.copytree(zoo["vit"], tmp_path / "vit-wrong")
    shutil.copy(zoo["dinov2"] / "model.safetensors", wrong_weights / "model.safetensors")
    with pytest.raises(LocktuneError, match="do not fit its config.json"):
        build(wrong_weights, zoo["bert"])
    from safetensors.torch import save_file  # a checkpoint with no tensor in common: nothing would load

    save_file({"classifier.weight": torch.zeros(2, 2)}, str(wrong_weights / "model.safetensors"), {"format": "pt"})
    with pytest.raises(LocktuneError, match="holds no weights for .* parameters"):
        build(wrong_weights, zoo["bert"])
    # No weights at all: `u` needs none, `L` says it cannot load them.
    config_only = tmp_path / "vit-config-only"
    config_only.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(zoo["vit"] / name, config_only / name)
    assert build(config_only, zoo["bert"], "uU") is not None
    with pytest.raises(LocktuneError, match="cannot load weights"):
        build(config_only, zoo["bert"], "LU")


def test_towers_command_describes_a_tower(zoo, tmp_path, capsys):
    from locktune.cli import main

    assert main(["towers"]) == 0
    listing = capsys.readouterr().out
    assert "hf:ID_OR_FOLDER" in listing and "efficientnet_lite0" in listing and "minilm" in listing
    assert main(["towers", f"hf:{zoo['dinov2']}", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["side"] == "image" and facts["output_dim"] == 32 and facts["letters"] == "LUu"
    assert facts["preprocess"]["resize"] == "shortest_edge" and facts["preprocess"]["image_size"] == SIZE
    assert main(["towers", f"hf:{zoo['t5']}"]) == 0
    assert "text tower" in capsys.readouterr().out
    config_only = tmp_path / "bert-config-only"
    shutil.copytree(zoo["bert"], config_only)
    (config_only / "model.safetensors").unlink()
    assert main(["towers", f"hf:{config_only}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["letters"] == "u"


def test_a_hub_id_is_read_from_the_local_hub_cache_with_its_revision(zoo, tmp_path, monkeypatch):
    """`hf:org/name` as a user with a filled Hugging Face cache has it: models--org--name/snapshots/<commit>."""
    from huggingface_hub import constants

    from locktune.towers.image import build_image_tower

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-vit"
    shutil.copytree(zoo["vit"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LOCKTUNE_ALLOW_DOWNLOAD", raising=False)
    tower = build_image_tower("hf:someone/tiny-vit", pretrained=True)
    direct = build_image_tower(f"hf:{zoo['vit']}", pretrained=True)
    identity = tower.cache_identity()
    assert identity["revision"] == commit and identity["weights"] == direct.cache_identity()["weights"]
    pixels = torch.randn(1, 3, SIZE, SIZE)
    torch.testing.assert_close(tower.eval()(pixels), direct.eval()(pixels), atol=0, rtol=0)
    assert build_image_tower(f"hf:someone/tiny-vit@{commit}", pretrained=True).cache_identity()["revision"] == commit
    with pytest.raises(LocktuneError, match="someone/other.* is not in the Hugging Face cache"):
        build_image_tower("hf:someone/other", pretrained=True)
