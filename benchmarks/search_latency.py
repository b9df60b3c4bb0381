"""Text -> image search latency over a large index (synthetic embeddings), in process and through HTTP.

    python benchmarks/search_latency.py --model /path/to/saved-or-run --images 100000 --queries 300

Writes an index of N random unit vectors (the model's width) to a temporary folder, serves it with the
real server, and times: (a) search alone (matrix-vector product + argpartition), (b) text encoding +
search in process, (c) POST /api/search end to end over HTTP on localhost.  Prints p50/p95/p99 in ms.
Without --model it uses a tiny from-scratch model, which times the search but not a real text tower.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WORDS = ["red", "blue", "cat", "dog", "car", "tree", "house", "a drawing of", "a photo of", "small", "big", "flower"]


def synthetic_index(folder: Path, n: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((n, dim), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    np.save(folder / "embeddings.npy", embeddings)
    (folder / "thumbs").mkdir()
    images = [{"path": f"img/{i:06d}.jpg", "thumb": f"{i:06d}.jpg"} for i in range(n)]
    (folder / "index.json").write_text(json.dumps({"format": 1, "root": str(folder), "dim": dim, "count": n,
                                                   "images": images, "skipped": {}}))


def percentiles(ms: list[float]) -> str:
    q = np.percentile(ms, [50, 95, 99])
    return f"p50 {q[0]:.2f} ms, p95 {q[1]:.2f} ms, p99 {q[2]:.2f} ms (mean {statistics.mean(ms):.2f}, n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="saved-model folder, run folder or model.pt (default: a tiny test model)")
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=24)
    args = parser.parse_args()

    import httpx

    import locktune
    from locktune.api import LitModel
    from locktune.index.store import ImageIndex
    from locktune.serve.app import create_app
    from test_serve import running_server

    if args.model:
        model = locktune.load(args.model)
    else:
        from test_api import tiny_net

        model = LitModel(tiny_net())
    rng = np.random.default_rng(1)
    queries = [" ".join(rng.choice(WORDS, size=3)) + f" {i}" for i in range(args.queries)]
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_index(Path(tmp), args.images, model.embed_dim)
        index = ImageIndex.load(tmp)
        search_only, in_process, http = [], [], []
        for q in queries[:20]:  # warm-up: page in the embeddings, let the allocators settle
            index.search(model.encode_text([q])[0], args.k)
        for q in queries:
            vector = model.encode_text([q])[0]
            t0 = time.perf_counter()
            index.search(vector, args.k)
            t1 = time.perf_counter()
            index.search(model.encode_text([q])[0], args.k)
            t2 = time.perf_counter()
            search_only.append((t1 - t0) * 1000)
            in_process.append((t2 - t1) * 1000)
        with running_server(create_app(model, index)) as url, httpx.Client(base_url=url) as client:
            for q in queries[:20]:
                client.post("/api/search", json={"query": q, "k": args.k})
            for q in queries:
                t0 = time.perf_counter()
                r = client.post("/api/search", json={"query": q, "k": args.k})
                http.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200 and len(r.json()["results"]) == args.k, r.text
    print(f"index: {args.images:,} x {model.embed_dim} float32; model: {args.model or 'tiny test model'}; k={args.k}")
    print(f"search only (matvec + argpartition):  {percentiles(search_only)}")
    print(f"encode text + search, in process:     {percentiles(in_process)}")
    print(f"POST /api/search over HTTP:           {percentiles(http)}")


if __name__ == "__main__":
    main()
