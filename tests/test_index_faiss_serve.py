"""`locktune index --backend faiss` end to end on a tiny model: what is printed and stored, `--add-to` against a
full build, a memory-mapped reload in a fresh process, every serve route through the faiss backend, and a
missing faiss as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("faiss")


def pictures(folder: Path, n: int, seed: int) -> None:
    """`n` small images of random colours and boxes, distinct enough to embed apart."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = Image.new("RGB", (48, 40), tuple(int(c) for c in rng.integers(0, 255, 3)))
        x, y = (int(v) for v in rng.integers(0, 24, 2))
        image.paste(tuple(int(c) for c in rng.integers(0, 255, 3)), (x, y, x + 16, y + 12))
        image.save(folder / f"{['cat', 'dog', 'car'][i % 3]}_{seed}_{i:03d}.png")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A saved tiny model; photos/a (24 images) and photos/b (12); indexes of photos/a grown by photos/b, and of
    photos/ whole, with faiss (approximate: --flat-max 5), and photos/ with brute force."""
    from locktune.api import LitModel
    from locktune.cli import main
    from test_api import tiny_net

    root = tmp_path_factory.mktemp("faiss-index")
    model = LitModel(tiny_net("Lu"))
    saved = str(model.save(root / "model"))
    pictures(root / "photos" / "a", 24, 1)
    pictures(root / "photos" / "b", 12, 2)
    common = ["--model", saved, "--device", "cpu"]
    runs = {}
    for name, argv in {"grown": ["index", str(root / "photos" / "a"), "--out", str(root / "grown"),
                                 "--backend", "faiss", "--flat-max", "5"],
                       "add": ["index", str(root / "photos" / "b"), "--add-to", str(root / "grown")],
                       "full": ["index", str(root / "photos"), "--out", str(root / "full"), "--backend", "faiss",
                                "--flat-max", "5"],
                       "brute": ["index", str(root / "photos"), "--out", str(root / "brute")]}.items():
        runs[name] = main(argv + common)
    assert set(runs.values()) == {0}, runs
    return {"root": root, "model": model, "saved": saved}


def test_the_choice_is_printed_and_stored_and_the_vectors_are_float16_shards(built, capsys, tmp_path):
    from locktune.cli import main
    from locktune.index.store import ImageIndex

    assert main(["index", str(built["root"] / "photos"), "--out", str(tmp_path / "ix"), "--backend", "faiss",
                 "--flat-max", "5", "--model", built["saved"], "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "36 images" in out and "faiss index: HNSW (M 32, efConstruction 80, efSearch 64)" in out, out
    assert "of the 4.0 GB budget; recall@10 1.000 measured on a sample" in out, out
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["format"] == 2 and meta["index"]["kind"] == "hnsw" and meta["index"]["recall"] == 1.0
    assert meta["index"]["params"]["efSearch"] == 64 and meta["count"] == 36
    shard = np.load(tmp_path / "ix" / meta["parts"][0]["file"], mmap_mode="r")
    assert shard.dtype == np.float16 and shard.shape == (36, 256)
    index = ImageIndex.load(tmp_path / "ix")
    assert isinstance(index.embeddings.arrays[0], np.memmap)  # served from disk, not read in
    brute = ImageIndex.load(built["root"] / "brute")
    np.testing.assert_allclose(index.embeddings.rows(np.arange(36)), brute.embeddings, atol=1e-3)  # float16


def test_add_to_equals_a_full_build(built):
    from locktune.index.store import ImageIndex

    grown, full = ImageIndex.load(built["root"] / "grown"), ImageIndex.load(built["root"] / "full")
    assert len(grown) == len(full) == 36 and len(grown.meta["parts"]) == 2
    assert [grown.original_file(i) for i in range(36)] == [full.original_file(i) for i in range(36)]
    # The same vectors up to float16 rounding: the image tower runs on other batch splits when an index grows,
    # and a CPU's matrix kernels may then differ in float32's last bits (seen on one host: 1 float16 step).
    np.testing.assert_allclose(grown.embeddings.rows(np.arange(36)).astype(np.float32),
                               full.embeddings.rows(np.arange(36)).astype(np.float32), atol=5e-4, rtol=0)
    assert (built["root"] / "grown" / "thumbs" / "000035.jpg").is_file()
    queries = built["model"].encode_text(["a cat", "a red car", "dog", "blue"]).numpy()
    for query in queries:
        rows, scores = grown.search(query, 10)
        full_rows, full_scores = full.search(query, 10)
        assert set(rows.tolist()) == set(full_rows.tolist())
        np.testing.assert_allclose(scores, full_scores, atol=2e-3)  # a 256-d dot product of those vectors
        exact = np.argsort(-(full.embeddings.rows(np.arange(36)).astype(np.float64) @ query), kind="stable")[:10]
        assert set(rows.tolist()) == set(exact.tolist())  # and both are the exact answer


def test_add_to_with_another_model_is_refused_and_brute_indexes_grow_too(built, tmp_path):
    from locktune.api import LitModel
    from locktune.errors import LocktuneError
    from locktune.index.build import add_to_index, build_index
    from locktune.index.store import ImageIndex
    from test_api import tiny_net

    import torch

    other = LitModel(tiny_net("Lu"))
    with torch.no_grad():
        next(other.net.parameters()).add_(0.5)  # other weights, another fingerprint
    with pytest.raises(LocktuneError, match="--add-to .* was built with another model"):
        add_to_index(other, built["root"] / "photos" / "b", built["root"] / "grown")
    model = built["model"]
    build_index(model, built["root"] / "photos" / "a", tmp_path / "old")  # format 1, as before
    add_to_index(model, built["root"] / "photos" / "b", tmp_path / "old")
    grown, brute = ImageIndex.load(tmp_path / "old"), ImageIndex.load(built["root"] / "brute")
    assert grown.meta["format"] == 1 and len(grown) == 36
    np.testing.assert_allclose(grown.embeddings, brute.embeddings, atol=1e-6)
    assert [grown.original_file(i) for i in range(36)] == [brute.original_file(i) for i in range(36)]


def test_a_fresh_process_opens_the_index_memory_mapped_and_finds_the_same(built):
    from locktune.index.store import ImageIndex

    folder = built["root"] / "grown"
    query = built["model"].encode_text(["a cat"]).numpy()[0]
    rows, scores = ImageIndex.load(folder).search(query, 5)
    script = ("import json, sys, numpy as np\nfrom locktune.index.store import ImageIndex\n"
              f"index = ImageIndex.load({str(folder)!r})\n"
              "rows, scores = index.search(np.array(json.loads(sys.stdin.read()), np.float32), 5)\n"
              "print(json.dumps({'rows': rows.tolist(), 'scores': scores.tolist(), 'mapped': "
              "all(isinstance(a, np.memmap) for a in index.embeddings.arrays)}))")
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(query.tolist()), capture_output=True,
                         text=True, env={**__import__("os").environ, "PYTHONPATH": src}, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["mapped"] and got["rows"] == rows.tolist()
    np.testing.assert_allclose(got["scores"], scores, atol=1e-6)


def test_every_serve_route_works_through_the_faiss_backend(built):
    import httpx

    from locktune.index.build import index_for_model
    from locktune.serve.app import create_app
    from test_serve import running_server

    model = built["model"]
    index = index_for_model(model, built["root"] / "grown")
    stored = index.embeddings.rows(np.arange(len(index))).astype(np.float64)
    with running_server(create_app(model, index)) as url:
        search = httpx.post(f"{url}/api/search", json={"query": "a red car", "k": 5})
        neighbors = httpx.post(f"{url}/api/neighbors", data={"image_id": "30", "k": "4"})
        images = httpx.get(f"{url}/api/images", params={"offset": 30, "limit": 10})
        info = httpx.get(f"{url}/api/info")
        thumb = httpx.get(f"{url}{search.json()['results'][0]['thumb']}")
    assert search.status_code == neighbors.status_code == images.status_code == 200, (search.text, neighbors.text)
    expected = np.argsort(-(stored @ model.encode_text(["a red car"]).numpy()[0]), kind="stable")[:5]
    assert [hit["id"] for hit in search.json()["results"]] == expected.tolist()
    image_hits = neighbors.json()["images"]
    assert image_hits[0]["id"] == 30 and image_hits[0]["score"] == pytest.approx(1.0, abs=2e-3)
    assert [hit["id"] for hit in image_hits] == np.argsort(-(stored @ stored[30]), kind="stable")[:4].tolist()
    assert neighbors.json()["labels"]  # the index's vocabulary, file names of both folders
    assert [row["id"] for row in images.json()] == list(range(30, 36))
    assert images.json()[0]["path"].endswith("b/cat_2_006.png") and info.json()["images"] == 36
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_a_missing_faiss_is_one_line_naming_the_extra(built, capsys, monkeypatch, tmp_path):
    from locktune.cli import main

    monkeypatch.setitem(sys.modules, "faiss", None)  # find_spec then reports it missing
    assert main(["index", str(built["root"] / "photos"), "--out", str(tmp_path / "ix"), "--backend", "faiss",
                 "--model", built["saved"], "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("locktune: error: locktune index --backend faiss needs the optional package 'faiss': "
                   "pip install 'locktune[faiss]'"), err
    assert not (tmp_path / "ix").exists()
