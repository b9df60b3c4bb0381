"""Micro-batched text encoding in the server: concurrent queries share text-tower calls, each gets its own
embedding (equal to encoding it alone), and a failing batch fails only its own requests."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from locktune.serve.batcher import TextBatcher


def fake_encoder(delay: float = 0.05):
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        time.sleep(delay)  # the text tower's time, during which new queries queue up
        if "boom" in texts:
            raise RuntimeError("out of memory")
        return np.array([[len(t), sum(map(ord, t))] for t in texts], dtype=np.float32)

    return encode, calls


def test_concurrent_queries_are_encoded_together_and_answered_individually():
    encode, calls = fake_encoder()
    batcher = TextBatcher(encode, max_batch=16)
    queries = [f"query {i}" for i in range(40)] + ["query 3"] * 5  # repeated queries are encoded once

    async def run():
        return await asyncio.gather(*(batcher.encode_one(q) for q in queries))

    results = asyncio.run(run())
    for query, row in zip(queries, results):
        np.testing.assert_array_equal(row, [len(query), sum(map(ord, query))])
    assert batcher.queries == len(queries) and len(calls) == batcher.batches
    assert len(calls) <= 6, f"{len(calls)} text-tower calls for {len(queries)} concurrent queries"
    assert max(len(c) for c in calls) <= 16 and all(len(set(c)) == len(c) for c in calls)


def test_a_failing_batch_fails_only_its_requests_and_the_worker_goes_on():
    encode, calls = fake_encoder(delay=0.0)
    batcher = TextBatcher(encode, max_batch=8)

    async def one(text: str):
        try:
            return await batcher.encode_one(text)
        except RuntimeError as error:
            return error

    first = asyncio.run(one("boom"))
    assert isinstance(first, RuntimeError)
    second = asyncio.run(one("fine"))
    np.testing.assert_array_equal(second, [4, sum(map(ord, "fine"))])


def test_a_lone_query_is_not_delayed():
    encode, calls = fake_encoder(delay=0.0)
    batcher = TextBatcher(encode, max_batch=64, max_wait_s=5.0)  # a wait this long would show

    async def run():
        start = time.perf_counter()
        await batcher.encode_one("one")
        await batcher.encode_one("two")
        return time.perf_counter() - start

    assert asyncio.run(run()) < 2.5 and calls == [["one"], ["two"]]


def test_concurrent_http_searches_equal_the_model_alone(tmp_path):
    """Through the real server: 24 concurrent /api/search requests rank exactly as the model's own
    embedding of each query does, with fewer text-tower calls than queries."""
    import httpx

    from locktune.api import LitModel
    from locktune.serve.app import create_app
    from test_api import tiny_net
    from test_serve import make_index, running_server

    model = LitModel(tiny_net())
    index = make_index(tmp_path, model)
    app = create_app(model, index, max_batch=8)
    queries = [f"a red square number {i}" if i % 2 else f"blue circle {i} " * (1 + i % 4) for i in range(24)]
    results: dict[int, list] = {}
    with running_server(app) as url:
        def ask(i: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                results[i] = client.post("/api/search", json={"query": queries[i], "k": 3}).json()["results"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(queries))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for i, query in enumerate(queries):
        rows, scores = index.search(model.encode_text([query])[0], 3)
        assert [hit["id"] for hit in results[i]] == [int(r) for r in rows]
        np.testing.assert_allclose([hit["score"] for hit in results[i]], scores, atol=2e-4)
    assert app.state.text_batcher.queries == len(queries)
