"""locktune.load and the LitModel API on a tiny model, checked against the network computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

CORPUS = ["a red square", "a blue circle", "a green tree", "a yellow sun", "a black cat", "a white dog"] * 8


def tiny_net(setting: str = "Lu", text_tower: str = "clip"):
    """A seconds-fast TwoTower: MobileNetV2 at 64 px and a one-layer CLIP text tower (or MiniLM-shaped)."""
    from locktune.config import ModelConfig
    from locktune.model import build_model

    torch.manual_seed(0)
    config = ModelConfig(setting=setting, text_tower=text_tower, image_tower="mobilenet_v2", image_size=64,
                         clip_width=32, clip_layers=1, clip_heads=2, clip_vocab_size=300, max_text_len=16)
    return build_model(config, corpus=lambda: CORPUS).eval()


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
    assert text.shape == (2, model.embed_dim) and image.shape == (4, model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(image, axis=1), 1.0, atol=1e-5)
    # Same weights as the network that was saved: compare with the network run directly.
    tokens = net.tokenize(["a red square", "a cat"])
    with torch.no_grad():
        expected = net.encode_text(tokens["ids"], tokens["mask"]).numpy()
    np.testing.assert_allclose(text, expected, atol=1e-6)
    assert model.encode_text("one string").shape == (1, model.embed_dim)


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
        logits = net.logit_scale * (net.encode_image(pixels) @ classes.T)
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
