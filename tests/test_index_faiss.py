"""The faiss backend on synthetic vectors: the index type chosen from count and budget, recall against an exact
float64 search on clustered data, adding after training, and broken files as one line naming them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

DIM = 32


def clustered(n: int, seed: int, centres: int = 60, dim: int = DIM) -> np.ndarray:
    """Unit vectors around `centres` fixed centres (the same centres for every seed), like real embeddings."""
    base = np.random.default_rng(0).standard_normal((centres, dim))
    rng = np.random.default_rng(seed)
    x = base[rng.integers(0, centres, n)] + rng.standard_normal((n, dim)) * 0.6
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_float64(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Top-k by inner product in float64, written out here (not the code under test)."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def shards_of(tmp_path, *blocks: np.ndarray):
    from locktune.index.sharded import write_part
    from locktune.index.vector_shards import VectorShards

    parts, start = [], 0
    for number, block in enumerate(blocks):
        parts.append(write_part(tmp_path, number, block, [f"{start + i}.png" for i in range(len(block))]))
        start += len(block)
    return VectorShards.open(tmp_path, parts, DIM, "rebuild"), parts


def recall_at_10(found, exact) -> float:
    return float(np.mean([len(set(f[0].tolist()) & set(e.tolist())) / 10 for f, e in zip(found, exact)]))


def test_memory_sizes_parse_and_a_bad_one_is_one_line():
    from locktune.errors import LocktuneError
    from locktune.index.choose import parse_memory

    assert parse_memory("4GB") == 4 * 10 ** 9 and parse_memory("512mb") == 512 * 10 ** 6
    assert parse_memory("1.5GiB") == int(1.5 * 2 ** 30) and parse_memory("1000") == 1000
    for bad in ["four GB", "4 potatoes", "-1GB", "0"]:
        with pytest.raises(LocktuneError, match="--max-index-memory .* is not a memory size; write e.g. 4GB"):
            parse_memory(bad)


def test_the_index_type_follows_the_count_and_the_budget():
    from locktune.errors import LocktuneError
    from locktune.index.choose import choose_index

    GB = 10 ** 9
    small = choose_index(50_000, 256, 4 * GB)
    assert small.kind == "flat" and small.memory_bytes == 50_000 * 256 * 4
    # 1M x 256: float32 vectors (1.02 GB) + a 32-neighbour graph fit 4 GB -> HNSW; not 1 GB -> IVF-PQ.
    assert choose_index(1_000_000, 256, 4 * GB).kind == "hnsw"
    ivf = choose_index(1_000_000, 256, 1 * GB)
    assert ivf.kind == "ivfpq" and ivf.params["pq_bytes"] == 64 and ivf.params["nlist"] == 1024  # 2^round(log2 1000)
    assert ivf.memory_bytes == 1_000_000 * (64 + 8) + 1024 * 256 * 4 + 256 * 256 * 4
    # 100M in 4 GB: 64- and 32-byte codes (+ 8-byte ids) do not fit, 16-byte ones do.
    big = choose_index(100_000_000, 256, 4 * GB)
    assert big.kind == "ivfpq" and big.params["pq_bytes"] == 16 and big.memory_bytes <= 4 * GB
    assert choose_index(1000, 256, 4 * GB, flat_max=100).kind == "hnsw"  # the threshold is the caller's
    with pytest.raises(LocktuneError) as tiny_budget:
        choose_index(100_000_000, 256, 100 * 10 ** 6)
    message = str(tiny_budget.value)
    assert "\n" not in message and "too small for 100,000,000 vectors" in message and "raise it" in message


@pytest.mark.parametrize("budget", [10 ** 9, 2 * 10 ** 6])  # HNSW fits 1 GB; 2 MB leaves IVF-PQ
def test_recall_against_exact_search_on_clustered_vectors(tmp_path, budget):
    from locktune.index.choose import choose_index
    from locktune.index.faiss_backend import FaissSearcher, new_index, tune

    vectors, queries = clustered(5000, 1), clustered(200, 2)  # queries drawn alike, not in the set
    shards, _ = shards_of(tmp_path, vectors)
    choice = choose_index(len(shards), DIM, budget, flat_max=1000)
    assert choice.kind == ("hnsw" if budget == 10 ** 9 else "ivfpq")
    index = new_index(choice, shards)
    tune(index, choice, shards)
    assert choice.recall >= 0.95
    found = FaissSearcher(index, choice, shards).search_many(queries, [10] * len(queries))
    stored = vectors.astype(np.float16)  # the index holds the float16 vectors the shards hold
    assert recall_at_10(found, exact_float64(stored, queries)) >= 0.95
    for (rows, scores), query in zip(found[:20], queries[:20]):  # scores are the stored vectors' cosines
        np.testing.assert_allclose(scores, stored[rows].astype(np.float64) @ query, atol=2e-3 if budget > 10 ** 7 else 1e-5)


def test_ivfpq_takes_added_vectors_without_retraining_and_finds_what_a_full_build_finds(tmp_path):
    from locktune.index.choose import choose_index
    from locktune.index.faiss_backend import FaissSearcher, add_rows, new_index

    first, more, queries = clustered(4000, 1), clustered(1000, 3), clustered(100, 2)
    grown_shards, _ = shards_of(tmp_path / "grown", first)
    choice = choose_index(5000, DIM, 2 * 10 ** 6, flat_max=1000)
    choice.params["nprobe"] = 32
    index = new_index(choice, grown_shards)
    centroids = index.quantizer.reconstruct_n(0, index.nlist).copy()
    grown_shards, _ = shards_of(tmp_path / "grown", first, more)
    add_rows(index, grown_shards, 4000)
    assert index.ntotal == 5000 and np.array_equal(index.quantizer.reconstruct_n(0, index.nlist), centroids)
    full_shards, _ = shards_of(tmp_path / "full", np.concatenate([first, more]))
    full = new_index(choice, full_shards)
    grown_found = FaissSearcher(index, choice, grown_shards).search_many(queries, [10] * 100)
    full_found = FaissSearcher(full, choice, full_shards).search_many(queries, [10] * 100)
    exact = exact_float64(np.concatenate([first, more]).astype(np.float16), queries)
    # Both re-rank from the same stored vectors, so wherever both find the true top 10 the answers are identical.
    same = np.mean([np.array_equal(g[0], f[0]) for g, f in zip(grown_found, full_found)])
    assert same >= 0.9 and recall_at_10(grown_found, exact) >= 0.97 and recall_at_10(full_found, exact) >= 0.97
    assert any(r >= 4000 for rows, _ in grown_found for r in rows)  # the added vectors are found


def test_a_truncated_or_foreign_vector_shard_or_faiss_file_is_one_line_naming_it(tmp_path):
    from locktune.errors import LocktuneError
    from locktune.index.vector_shards import VectorShards

    vectors = clustered(300, 1)
    _, parts = shards_of(tmp_path, vectors)
    shard = tmp_path / parts[0]["file"]
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) - 100])  # a copy cut short
    with pytest.raises(LocktuneError) as truncated:
        VectorShards.open(tmp_path, parts, DIM, "rebuild the index")
    np.save(shard, vectors)  # float32, not the float16 the index writes
    with pytest.raises(LocktuneError) as foreign:
        VectorShards.open(tmp_path, parts, DIM, "rebuild the index")
    shard.unlink()
    with pytest.raises(LocktuneError) as missing:
        VectorShards.open(tmp_path, parts, DIM, "rebuild the index")
    for caught, says in [(truncated, "truncated"), (foreign, "float32 vectors of shape (300, 32)"), (missing, "missing")]:
        message = str(caught.value)
        assert "\n" not in message and str(shard) in message and says in message and "rebuild the index" in message


def test_a_truncated_faiss_file_is_one_line_naming_it(tmp_path):
    from locktune.errors import LocktuneError
    from locktune.index.choose import choose_index
    from locktune.index.faiss_backend import FAISS_FILE, new_index, read_index, write_index

    shards, _ = shards_of(tmp_path, clustered(500, 1))
    write_index(new_index(choose_index(500, DIM, 10 ** 9, flat_max=100), shards), tmp_path)
    assert read_index(tmp_path, 500, "rebuild").ntotal == 500
    with pytest.raises(LocktuneError, match=r"holds 500 vectors but index.json lists 600 images; rebuild"):
        read_index(tmp_path, 600, "rebuild")
    path = tmp_path / FAISS_FILE
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(LocktuneError) as caught:
        read_index(tmp_path, 500, "rebuild")
    assert "\n" not in str(caught.value) and f"faiss index {path} is unreadable or truncated" in str(caught.value)


def test_the_cli_help_defaults_are_the_choosers():
    from locktune import cli_use
    from locktune.index.choose import DEFAULT_FLAT_MAX, DEFAULT_MAX_INDEX_MEMORY

    assert (cli_use.MAX_INDEX_MEMORY_DEFAULT, cli_use.FLAT_MAX_DEFAULT) == (DEFAULT_MAX_INDEX_MEMORY, DEFAULT_FLAT_MAX)
