"""locktune.load and the LitModel API on a tiny model, checked against the network computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

CORPUS = ["a red square", "a blue circle", "a green tree", "a yellow sun", "a black cat", "a white dog"] * 8


def tiny_net(setting: str = "Lu", text_tower: str = "clip", loss: str = "global", image_size: int = 64):
    """A seconds-fast TwoTower: MobileNetV2 at 64 px (or `image_size`) and a one-layer CLIP text tower (or
    MiniLM-shaped)."""
    from locktune.config import ModelConfig
    from locktune.model import build_model

    torch.manual_seed(0)
    config = ModelConfig(setting=setting, text_tower=text_tower, image_tower="mobilenet_v2", image_size=image_size,
                         text_width=32, text_layers=1, text_heads=2, text_vocab_size=300, max_text_len=16)
    return build_model(config, corpus=lambda: CORPUS, loss=loss).eval()


def sigmoid_net():
    """A tiny sigmoid-trained model whose temperature and bias are not the initial ones (as after training)."""
    net = tiny_net(loss="sigmoid")
    with torch.no_grad():
        net.log_logit_scale.fill_(np.log(7.5))
        net.logit_bias.fill_(1.25)  # high enough that several labels match at once
    return net


def by_hand_similarities(net, image, labels, templates) -> np.ndarray:
    """Cosine of the image with each label's prompt ensemble (mean of template embeddings, renormalised)."""
    with torch.no_grad():
        rows = []
        for label in labels:
            tokens = net.tokenize([t.format(label) for t in templates])
            rows.append(torch.nn.functional.normalize(net.encode_text(tokens["ids"], tokens["mask"]).mean(0), dim=0))
        return (net.encode_image(net.preprocess(image)[None]) @ torch.stack(rows).T)[0].double().numpy()


def shapes_images() -> dict[str, Image.Image]:
    """Small synthetic images, distinct enough to give distinct embeddings."""
    out = {}
    for name, colour in [("red", (220, 30, 30)), ("green", (30, 180, 60)), ("blue", (40, 60, 220))]:
        image = Image.new("RGB", (80, 60), colour)
        image.paste((255, 255, 255), (10, 10, 30, 40))
        out[name] = image
    out["rgba"] = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    return out


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    from locktune.saved_model import save_pretrained

    net = tiny_net()
    path = save_pretrained(net, tmp_path_factory.mktemp("run") / "model")
    return net, path


def test_load_returns_model_with_normalised_embeddings(saved_run):
    import locktune

    net, path = saved_run
    model = locktune.load(path.parent)  # a run folder
    text = model.encode_text(["a red square", "a cat"])
    image = model.encode_image(list(shapes_images().values()))
    for out in (text, image):  # torch in, torch out, as open_clip: float32 on the model's device
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device == model.device
    assert text.shape == (2, model.embed_dim) and image.shape == (4, model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(text.numpy().astype(np.float64), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(image.numpy().astype(np.float64), axis=1), 1.0, atol=1e-5)
    # Same weights as the network that was saved: compare with the network run directly.
    tokens = net.tokenize(["a red square", "a cat"])
    with torch.no_grad():
        expected = net.encode_text(tokens["ids"], tokens["mask"]).numpy()
    np.testing.assert_allclose(text.numpy(), expected, atol=1e-6)
    assert model.encode_text("one string").shape == (1, model.embed_dim)
    # Plain tensors, not inference-mode ones: a caller may normalise or stack them in place.
    text /= text.norm(dim=-1, keepdim=True)


def test_classify_is_a_softmax_over_the_prompt_ensemble(saved_run):
    import locktune

    net, path = saved_run
    model = locktune.load(path)
    labels, templates = ["square", "circle", "tree"], ["a photo of a {}.", "{}"]
    image = shapes_images()["red"]
    result = model.classify(image, labels, templates)
    probs = dict(result)
    assert [p for _, p in result] == sorted((p for _, p in result), reverse=True)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    # By hand: mean of each label's template embeddings, renormalised; logits = scale * cosine; softmax.
    with torch.no_grad():
        rows = []
        for label in labels:
            tokens = net.tokenize([t.format(label) for t in templates])
            rows.append(torch.nn.functional.normalize(net.encode_text(tokens["ids"], tokens["mask"]).mean(0), dim=0))
        classes = torch.stack(rows)
        pixels = net.preprocess(image)[None]
        logits = net.scale * (net.encode_image(pixels) @ classes.T)
        expected = torch.softmax(logits, dim=-1)[0].numpy()
    np.testing.assert_allclose([probs[label] for label in labels], expected, atol=1e-5)


def test_zero_shot_classifier_batches_and_rejects_empty(saved_run):
    import locktune

    model = locktune.load(saved_run[1])
    classifier = model.zero_shot_classifier(["red", "green", "blue"])
    images = list(shapes_images().values())
    batch = classifier(images)
    assert batch.shape == (4, 3)
    np.testing.assert_allclose(batch.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(batch[1], classifier(images[1]), atol=1e-6)
    from locktune.errors import LocktuneError

    with pytest.raises(LocktuneError, match="at least one class"):
        model.zero_shot_classifier([])


def test_no_silent_wrong_answers_from_labels_and_templates(saved_run, capsys):
    """A bare string is not a list of labels, a template must place the label, repeated labels are merged."""
    import locktune
    from locktune.errors import LocktuneError

    model = locktune.load(saved_run[1])
    image = shapes_images()["red"]
    with pytest.raises(LocktuneError, match="not the single string 'cat'.*letter by letter"):
        model.classify(image, "cat")
    for template in ("a photo", "a photo of a {name}", "{1} and {}"):
        with pytest.raises(LocktuneError, match="has no \\{\\} where the class name goes"):
            model.zero_shot_classifier(["cat", "dog"], [template])
    with pytest.raises(LocktuneError, match="class name 1 is None"):
        model.classify(image, ["cat", None])
    with pytest.raises(LocktuneError, match="class name 0 is ''"):
        model.classify(image, ["", "dog"])
    merged = model.classify(image, ["red", "blue", "red"])
    assert sorted(label for label, _ in merged) == ["blue", "red"]
    assert sum(p for _, p in merged) == pytest.approx(1.0)
    assert "repeated labels merged: 'red'" in capsys.readouterr().err
    assert dict(merged) == pytest.approx(dict(model.classify(image, ["red", "blue"])))


def test_version_flag(capsys):
    from locktune import __version__
    from locktune.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"locktune {__version__}"


def test_open_clip_conventions(saved_run, tmp_path):
    """Inputs of every kind give the same embeddings, as torch tensors; forward logits; logit_scale is the log."""
    import locktune

    net, path = saved_run
    model = locktune.load(path)
    image = shapes_images()["red"]
    image.save(tmp_path / "red.png")
    reference = model.encode_image(image)
    array = np.asarray(image)
    as_float = array.astype(np.float32) / 255.0
    pixels = net.preprocess(image)
    for given in (str(tmp_path / "red.png"), tmp_path / "red.png", (tmp_path / "red.png").read_bytes(), array,
                  as_float, [image], array[None], pixels, pixels[None], [pixels]):
        got = model.encode_image(given)
        assert isinstance(got, torch.Tensor) and got.shape == (1, model.embed_dim)
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=0, msg=type(given).__name__)
    # preprocess takes what encode_image takes, and gives the pixels encode_image runs on.
    torch.testing.assert_close(model.preprocess(str(tmp_path / "red.png")), pixels, atol=0, rtol=0)
    assert model.preprocess([image, array]).shape == (2, 3, 64, 64) and model.image_size == 64
    torch.testing.assert_close(model.encode_image(model.preprocess(image)), reference, atol=1e-6, rtol=0)
    two = model.encode_image([image, image])
    assert two.device == model.device and two.shape == (2, model.embed_dim)
    texts = ["a red square", "a cat"]
    text = model.encode_text(texts)
    # open_clip: logit_scale is the log.  Against the saved file read without locktune, in float64: the
    # untrained model's initial scale, 10 (ModelConfig.logit_scale_init), is stored as its log.
    stored = float(load_file(str(path / "model.safetensors"))["log_logit_scale"].astype(np.float64))
    assert isinstance(model.logit_scale, torch.Tensor) and model.logit_scale.ndim == 0
    assert float(model.logit_scale) == pytest.approx(math.log(10.0), abs=1e-6)
    assert stored == pytest.approx(math.log(10.0), abs=1e-6) and model.scale == pytest.approx(10.0, rel=1e-6)
    # Forward: 10 x cosine, the cosines from the saved network run directly, in float64.
    tokens = net.tokenize(texts)
    with torch.no_grad():
        cosines = (net.encode_image(torch.stack([pixels, pixels])).double()
                   @ net.encode_text(tokens["ids"], tokens["mask"]).double().T)
    logits_per_image, logits_per_text = model([image, image], texts)
    assert isinstance(logits_per_image, torch.Tensor) and logits_per_image.shape == (2, 2)
    torch.testing.assert_close(logits_per_image.double(), 10.0 * cosines, atol=1e-4, rtol=0)
    torch.testing.assert_close(logits_per_text, logits_per_image.T)
    torch.testing.assert_close(logits_per_image, model.logit_scale.exp() * two @ text.T, atol=1e-5, rtol=0)
    tokens = model.tokenizer(["a red square"])
    assert set(tokens) >= {"ids", "mask"} and tokens["ids"].shape[0] == 1
    assert model.to("cpu") is model and "setting=Lu" in repr(model) and "mobilenet_v2" in repr(model)


def test_the_internal_model_has_no_logit_scale_of_another_meaning(saved_run):
    """`logit_scale` means the log scale wherever it is spelt: the internal TwoTower calls its multiplier
    `scale`, so no code can read a multiplier where open_clip's name promises a log."""
    net = saved_run[0]
    assert not hasattr(net, "logit_scale")
    assert float(net.scale.detach()) == pytest.approx(10.0, rel=1e-6)


def test_logit_scale_is_the_saved_one_capped_at_the_max(tmp_path):
    """A learned scale above model.logit_scale_max (100) is used as 100, as training clamps it: `scale`,
    `logit_scale` (its log) and the forward logits all say 100, not the stored 150."""
    import locktune
    from locktune.saved_model import save_pretrained

    net = tiny_net()
    with torch.no_grad():
        net.log_logit_scale.fill_(math.log(150.0))
    model = locktune.load(save_pretrained(net, tmp_path / "model"))
    assert model.scale == pytest.approx(100.0, rel=1e-6)
    assert float(model.logit_scale) == pytest.approx(math.log(100.0), abs=1e-6)
    image, texts = shapes_images()["red"], ["a red square", "a cat"]
    cosines = model.encode_image(image).double() @ model.encode_text(texts).double().T
    logits, _ = model([image], texts)
    np.testing.assert_allclose(logits.double().numpy(), 100.0 * cosines.numpy(), atol=1e-3)


def test_classify_takes_batches(saved_run):
    import locktune

    model = locktune.load(saved_run[1])
    images = [shapes_images()["red"], shapes_images()["blue"]]
    batch = model.classify(images, ["red", "blue"])
    assert len(batch) == 2 and all(len(row) == 2 for row in batch)
    single = model.classify(images[1], ["red", "blue"])
    assert [label for label, _ in batch[1]] == [label for label, _ in single]
    np.testing.assert_allclose([p for _, p in batch[1]], [p for _, p in single], atol=1e-6)
    assert "2 classes" in repr(model.zero_shot_classifier(["red", "blue"]))


@pytest.mark.parametrize("given, expected", [
    ("/nowhere/cat.png", "image 0: no image file at '/nowhere/cat.png'"),
    ("TEXTFILE", "image 0: '.*not-an-image.png' is not a readable image"),
    (np.zeros((2, 4, 4, 7)), "images: a numpy image should be H x W"),
    (42, "image 0: expected a path, a PIL image, a numpy array or a preprocessed tensor, got int"),
])
def test_bad_images_are_one_clear_error(saved_run, tmp_path, given, expected):
    import locktune
    from locktune.errors import LocktuneError

    if isinstance(given, str) and given == "TEXTFILE":
        given = tmp_path / "not-an-image.png"
        given.write_text("hello")
    model = locktune.load(saved_run[1])
    with pytest.raises(LocktuneError, match=expected) as caught:
        model.encode_image([given] if not isinstance(given, np.ndarray) else given)
    assert "\n" not in str(caught.value)
    with pytest.raises(LocktuneError, match="text 1 is int"):
        model.encode_text(["ok", 5])


def test_a_sigmoid_trained_model_reports_one_sigmoid_per_label(tmp_path):
    """train.loss=sigmoid: the saved folder records the loss; `locktune.load` restores t and b; classify gives
    sigmoid(t * cos + b) for each label on its own, which need not sum to 1."""
    import json

    import locktune
    from locktune.saved_model import save_pretrained

    net = sigmoid_net()
    folder = save_pretrained(net, tmp_path / "model")
    assert json.loads((folder / "locktune_model.json").read_text())["loss"] == "sigmoid"
    model = locktune.load(folder)
    assert model.loss == "sigmoid" and model.scores == "sigmoid"
    assert model.scale == pytest.approx(7.5, rel=1e-6) and model.logit_bias == pytest.approx(1.25)
    labels, templates = ["square", "circle", "tree"], ["a photo of a {}.", "{}"]
    image = shapes_images()["red"]
    probs = dict(model.classify(image, labels, templates))
    cos = by_hand_similarities(net, image, labels, templates)
    expected = 1 / (1 + np.exp(-(7.5 * cos + 1.25)))
    np.testing.assert_allclose([probs[label] for label in labels], expected, atol=1e-5)
    assert sum(probs.values()) > 1.2  # independent per label: nothing makes them sum to 1


def test_a_saved_model_without_the_loss_field_is_softmax(saved_run, tmp_path):
    """Folders written before the manifest named the loss were all softmax-trained."""
    import json
    import shutil

    import locktune

    folder = shutil.copytree(saved_run[1], tmp_path / "old")
    manifest = json.loads((folder / "locktune_model.json").read_text())
    assert manifest.pop("loss") == "global"
    (folder / "locktune_model.json").write_text(json.dumps(manifest))
    model = locktune.load(folder)
    assert model.loss == "global" and model.scores == "softmax" and model.logit_bias is None
    probs = model.zero_shot_classifier(["red", "green"])(shapes_images()["red"])
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
