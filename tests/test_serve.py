"""The server over real HTTP (uvicorn on a free port): answers checked by hand, and bad input gets a clear 4xx."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from test_api import shapes_images, tiny_net


@contextlib.contextmanager
def running_server(app):
    """Serve `app` with uvicorn in a thread on a free local port; yields the base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def make_index(tmp_path, model):
    """A small image folder (coloured shapes in sub-folders) indexed with `model`."""
    from locktune.index.build import build_index
    from locktune.index.store import ImageIndex

    photos = tmp_path / "photos"
    for name, image in shapes_images().items():
        (photos / name).mkdir(parents=True, exist_ok=True)
        image.save(photos / name / f"{name}_square.png")
    (photos / "notes.txt").write_text("not an image")
    (photos / "broken.png").write_bytes(b"not a png")
    build_index(model, photos, tmp_path / "index")
    return ImageIndex.load(tmp_path / "index")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from locktune.api import LitModel
    from locktune.serve.app import create_app

    model = LitModel(tiny_net())
    index = make_index(tmp_path_factory.mktemp("serve"), model)
    with running_server(create_app(model, index)) as url:
        yield url, model, index


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_index_holds_every_readable_image_with_a_thumbnail(served):
    _, model, index = served
    assert len(index) == 4 and index.meta["skipped"] == {"broken.png": index.meta["skipped"]["broken.png"]}
    assert "red square" in index.labels and "green" in index.labels  # file and folder names
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    # Row i is image i: compare with embedding that file directly (not through the cache).
    row = [i for i in range(len(index)) if index.meta["images"][i]["path"] == "blue/blue_square.png"][0]
    np.testing.assert_allclose(index.embeddings[row], model.encode_image(index.original_file(row))[0], atol=1e-5)


def test_classify_upload_matches_the_api(served):
    import httpx

    url, model, _ = served
    image = shapes_images()["red"]
    r = httpx.post(f"{url}/api/classify", data={"labels": "square, circle\ntree\n\nsquare"},
                   files={"image": ("red.png", png_bytes(image), "image/png")})
    assert r.status_code == 200, r.text
    rows = r.json()["labels"]
    assert [row["label"] for row in rows] == [label for label, _ in model.classify(image, ["square", "circle", "tree"],
                                                                                  _templates())]
    assert sum(row["probability"] for row in rows) == pytest.approx(1.0, abs=1e-6)
    assert r.json()["scores"] == "softmax"
    expected = dict(model.classify(image, ["square", "circle", "tree"], _templates()))
    for row in rows:
        assert row["probability"] == pytest.approx(expected[row["label"]], abs=1e-5)


def test_classify_with_a_sigmoid_trained_model_reports_a_sigmoid_per_label():
    import httpx

    from locktune.api import LitModel
    from locktune.serve.app import TEMPLATES, create_app
    from test_api import by_hand_similarities, sigmoid_net

    net = sigmoid_net()
    image = shapes_images()["red"]
    labels = ["square", "circle", "tree"]
    with running_server(create_app(LitModel(net))) as url:
        info = httpx.get(f"{url}/api/info").json()
        r = httpx.post(f"{url}/api/classify", data={"labels": ", ".join(labels)},
                       files={"image": ("red.png", png_bytes(image), "image/png")})
    assert info["loss"] == "sigmoid" and info["scores"] == "sigmoid"
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scores"] == "sigmoid"
    got = {row["label"]: row["probability"] for row in body["labels"]}
    # The upload went through PNG; the by-hand embedding takes the same decoded pixels.
    decoded = Image.open(io.BytesIO(png_bytes(image)))
    cos = by_hand_similarities(net, decoded, labels, TEMPLATES)
    np.testing.assert_allclose([got[label] for label in labels], 1 / (1 + np.exp(-(7.5 * cos + 1.25))), atol=1e-5)
    assert sum(got.values()) > 1.2


def _templates():
    from locktune.serve.app import TEMPLATES

    return TEMPLATES


def test_search_is_the_brute_force_ranking(served):
    import httpx

    url, model, index = served
    r = httpx.post(f"{url}/api/search", json={"query": "a blue square", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    scores = index.embeddings @ model.encode_text(["a blue square"])[0].numpy()
    expected = np.argsort(-scores)[:3]
    assert [hit["id"] for hit in body["results"]] == expected.tolist()
    assert body["results"][0]["score"] == pytest.approx(float(scores[expected[0]]), abs=1e-4)
    thumb = httpx.get(url + body["results"][0]["thumb"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    Image.open(io.BytesIO(thumb.content)).verify()


def test_neighbors_and_image_listing(served):
    import httpx

    url, _, index = served
    r = httpx.post(f"{url}/api/neighbors", data={"image_id": "0", "k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["labels"]) == 3 and body["images"][0]["id"] == 0  # an image is its own nearest neighbour
    assert body["images"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    own = httpx.post(f"{url}/api/neighbors", data={"image_id": "1", "labels": "x\ny"}).json()
    assert sorted(row["label"] for row in own["labels"]) == ["x", "y"]
    listing = httpx.get(f"{url}/api/images?limit=2").json()
    assert [item["id"] for item in listing] == [0, 1]
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/api/classify", "/api/search", "/api/neighbors", "/api/images"} <= set(spec["paths"])
    assert httpx.get(url + "/").status_code == 200


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


THIN_PNG = _png(Image.new("L", (1, 200_000), 128))  # a few hundred bytes; padded to a square: 120 GB


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


BOMB_PNG = _png_claiming(200_000, 200_000)

BAD_REQUESTS = [
    # (description, request kwargs, expected status, words the message must contain)
    ("not an image", dict(method="POST", path="/api/classify", data={"labels": "a"},
                          files={"image": ("x.png", b"%PDF-1.4 definitely not a picture", "image/png")}), 415, "not an image"),
    ("oversized upload", dict(method="POST", path="/api/classify", data={"labels": "a"},
                              files={"image": ("big.png", b"\0" * (11 * 1024 * 1024), "image/png")}), 413, "limit"),
    ("1 x 200,000 px image", dict(method="POST", path="/api/classify", data={"labels": "a"},
                                  files={"image": ("thin.png", THIN_PNG, "image/png")}), 413, "nearer to a square"),
    ("PNG header claiming 200,000 x 200,000 px", dict(method="POST", path="/api/classify", data={"labels": "a"},
                                                      files={"image": ("bomb.png", BOMB_PNG, "image/png")}), 413,
     "megapixels"),
    ("empty labels", dict(method="POST", path="/api/classify", data={"labels": " ,\n ", "image_id": "0"}), 422,
     "at least one label"),
    ("10,000 labels", dict(method="POST", path="/api/classify",
                           data={"labels": "\n".join(f"label {i}" for i in range(10_000)), "image_id": "0"}), 422,
     "limit is 1000"),
    ("no image", dict(method="POST", path="/api/classify", data={"labels": "a"}), 422, "send an image"),
    ("unknown image id", dict(method="POST", path="/api/classify", data={"labels": "a", "image_id": "999"}), 404,
     "no indexed image"),
    ("malformed JSON", dict(method="POST", path="/api/search", content=b'{"query": "cat", ',
                            headers={"content-type": "application/json"}), 400, "not valid JSON"),
    ("JSON of the wrong shape", dict(method="POST", path="/api/search", json={"query": "", "k": 10_000}), 422,
     "type what to look for, e.g. 'a red car'; k (how many images) must be a whole number from 1 to 200"),
    ("labels missing", dict(method="POST", path="/api/classify", data={"image_id": "0"}), 422,
     "type at least one label (one per line, or separated by commas)"),
    ("query not text", dict(method="POST", path="/api/search", json={"query": 5}), 422, "the query must be text"),
    ("traversal ../", dict(method="GET", path="/thumbs/../index.json"), 404, "no such"),
    ("traversal encoded", dict(method="GET", path="/thumbs/..%2F..%2F..%2Fetc%2Fpasswd"), 404, "no such thumbnail"),
    ("traversal absolute", dict(method="GET", path="/thumbs/%2Fetc%2Fpasswd"), 404, "no such thumbnail"),
    ("traversal double-encoded", dict(method="GET", path="/thumbs/%252e%252e%252findex.json"), 404, "no such thumbnail"),
    ("traversal static", dict(method="GET", path="/static/..%2F..%2Fapi.py"), 404, "no such"),
]


@pytest.mark.parametrize("name,request_args,status,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_clear_4xx_and_the_server_stays_up(served, name, request_args, status, words):
    import httpx

    url = served[0]
    args = dict(request_args)
    method, path = args.pop("method"), args.pop("path")
    # A raw URL so httpx does not normalise the '..' segments away before they reach the server.
    r = httpx.request(method, httpx.URL(url + path) if "%" in path else url + path, **args, timeout=30)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    assert "passwd" not in r.text and "root:" not in r.text
    if words:
        assert words in r.json()["error"], r.json()
    assert httpx.get(f"{url}/api/info").status_code == 200  # still serving


def test_an_index_built_with_another_model_is_refused_or_reembedded(tmp_path):
    """No silent wrong answers: serving an index with a model that did not build it is one clear error;
    --reembed embeds its images again with the serving model (and equals a fresh index)."""
    import torch

    from locktune.api import LitModel
    from locktune.errors import LocktuneError
    from locktune.index.build import build_index, index_for_model
    from locktune.saved_model import save_pretrained

    builder = LitModel(tiny_net())
    index = make_index(tmp_path, builder)
    assert index_for_model(builder, tmp_path / "index").meta["model_fingerprint"] == builder.fingerprint
    exported = LitModel(__import__("locktune").load(save_pretrained(builder.net, tmp_path / "saved")).net)
    assert exported.fingerprint == builder.fingerprint  # a run and its export are the same model

    other_net = tiny_net()
    with torch.no_grad():
        other_net.text_projection.weight.mul_(-1.0)
        other_net.image_projection.weight.mul_(-1.0)
    other = LitModel(other_net)
    assert other.fingerprint != builder.fingerprint
    with pytest.raises(LocktuneError, match="was built with another model .* --reembed") as caught:
        index_for_model(other, tmp_path / "index")
    assert "\n" not in str(caught.value)
    reembedded = index_for_model(other, tmp_path / "index", reembed=True)
    assert reembedded.meta["model_fingerprint"] == other.fingerprint
    build_index(other, tmp_path / "photos", tmp_path / "fresh")
    fresh = index_for_model(other, tmp_path / "fresh")
    np.testing.assert_allclose(reembedded.embeddings, fresh.embeddings, atol=1e-6)
    np.testing.assert_allclose(reembedded.label_embeddings, fresh.label_embeddings, atol=1e-6)
