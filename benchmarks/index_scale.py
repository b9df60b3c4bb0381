"""The faiss index backend vs brute force at 1M synthetic embeddings, side by side in one run.

    python benchmarks/index_scale.py --vectors 1000000 --max-index-memory 1GB --json /tmp/index_scale.json

Vectors: 256-d unit vectors drawn around a few thousand centres with noise (clustered like real image
embeddings); queries are drawn the same way but are not in the set.  Each backend runs in its own child
process so its peak RSS (ru_maxrss: faiss allocates outside Python, tracemalloc would not see it) is its own:

    brute   the project's own `top_k` over the float32 matrix held in memory (the default backend)
    build   the faiss backend's build: choose from the count and the budget, train, add, tune (locktune code)
    faiss   the built index opened as `serve` opens it (faiss.index and the float16 shards memory-mapped)

Recall@10 is against exact float32 search; latency is one query at a time (p50/p95).  The 100M figures at the
end are extrapolated from the measured rates.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K = 10


def clustered(n: int, centres: np.ndarray, seed: int, noise: float) -> np.ndarray:
    """`n` unit vectors, each a random centre plus Gaussian noise of norm ~`noise`, normalised."""
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        x = centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, dim), np.float32) * (noise / dim ** 0.5)
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child inherits from its parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latency(search, queries: np.ndarray) -> dict:
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q)
        times.append((time.perf_counter() - start) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "queries": len(times)}


def recall(found: list[np.ndarray], exact: np.ndarray) -> float:
    return round(float(np.mean([len(set(f[:K].tolist()) & set(e.tolist())) / K for f, e in zip(found, exact)])), 4)


def child_brute(work: Path) -> dict:
    from locktune.index.store import top_k

    start = time.perf_counter()
    matrix = np.load(work / "vectors_f32.npy")  # in memory, as format 1 loads it
    queries = np.load(work / "queries.npy")
    load_s = time.perf_counter() - start
    exact = np.stack([top_k(matrix, q, K)[0] for q in queries])
    np.save(work / "exact.npy", exact)
    timed = latency(lambda q: top_k(matrix, q, K), queries[: int(os.environ["LATENCY_QUERIES"])])
    return {**timed, "load_s": round(load_s, 1), "build_s": 0.0, "recall@10": 1.0, "peak_rss_mb": round(peak_rss_mb())}


def child_build(work: Path, budget: str) -> dict:
    import faiss

    from locktune.index.choose import choose_index, parse_memory
    from locktune.index.faiss_backend import new_index, tune, write_index
    from locktune.index.vector_shards import VectorShards

    faiss.omp_set_num_threads(os.cpu_count() or 1)  # building is batch work: every core
    meta = json.loads((work / "parts.json").read_text())
    start = time.perf_counter()
    shards = VectorShards.open(work, meta["parts"], meta["dim"], "rerun the benchmark")
    choice = choose_index(len(shards), shards.dim, parse_memory(budget), meta["flat_max"])
    index = new_index(choice, shards)
    built_s = time.perf_counter() - start
    tune(index, choice, shards)
    write_index(index, work)
    total_s = time.perf_counter() - start
    (work / "choice.json").write_text(json.dumps(choice.to_json()))
    return {"choice": choice.describe(), "params": choice.params, "train_add_s": round(built_s, 1),
            "build_s": round(total_s, 1), "tune_s": round(total_s - built_s, 1), "peak_rss_mb": round(peak_rss_mb())}


def child_faiss(work: Path) -> dict:
    import faiss

    from locktune.index.choose import IndexChoice
    from locktune.index.faiss_backend import FaissSearcher, read_index
    from locktune.index.vector_shards import VectorShards

    faiss.omp_set_num_threads(1)  # one query at a time: faiss parallelises over queries, so one thread serves one
    meta = json.loads((work / "parts.json").read_text())
    start = time.perf_counter()
    shards = VectorShards.open(work, meta["parts"], meta["dim"], "rerun the benchmark")
    searcher = FaissSearcher(read_index(work, len(shards), "rerun"), IndexChoice.from_json(
        json.loads((work / "choice.json").read_text())), shards)
    load_s = time.perf_counter() - start
    queries, exact = np.load(work / "queries.npy"), np.load(work / "exact.npy")
    found = [searcher.search_many(q[None], [K])[0][0] for q in queries]
    timed = latency(lambda q: searcher.search_many(q[None], [K]), queries[: int(os.environ["LATENCY_QUERIES"])])
    return {**timed, "load_s": round(load_s, 2), "recall@10": recall(found, exact), "peak_rss_mb": round(peak_rss_mb())}


def run_child(role: str, work: Path, *extra: str) -> dict:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", role, "--work", str(work), *extra],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{role} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{role}: {json.dumps(result)} ({time.perf_counter() - started:.0f}s)", flush=True)
    return result


def on_paper(n: int, dim: int, measured: int, brute: dict, build: dict, faiss_run: dict, budget: str) -> dict:
    """100M extrapolated: memory from the index formulas, times from the measured per-vector rates."""
    from locktune.index.choose import choose_index, parse_memory

    scale = n / measured
    choice = choose_index(n, dim, parse_memory(budget))
    lists_scanned = choice.params.get("nprobe", 0) / max(1, choice.params.get("nlist", 1))
    measured_params = build["params"]
    measured_scan = measured * measured_params.get("nprobe", 0) / max(1, measured_params.get("nlist", 1))
    return {"vectors": n, "brute_ram_gb": round(n * dim * 4 / 1e9, 1), "brute_p95_ms": round(brute["p95_ms"] * scale),
            "shards_disk_gb": round(n * dim * 2 / 1e9, 1), "faiss_choice": choice.describe(),
            "faiss_ram_gb": round(choice.memory_bytes / 1e9, 2), "budget": budget,
            "faiss_build_h_same_cores": round(build["build_s"] * scale / 3600, 1),
            "codes_scanned_per_query": int(n * lists_scanned),
            "faiss_p95_ms_scaled_by_codes_scanned": (round(faiss_run["p95_ms"] * n * lists_scanned / measured_scan, 1)
                                                     if measured_scan else None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--centres", type=int, default=4000)
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm around a unit centre")
    parser.add_argument("--queries", type=int, default=500, help="recall queries (not in the set)")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--max-index-memory", default="1GB")
    parser.add_argument("--flat-max", type=int, default=200_000)
    parser.add_argument("--paper-max-index-memory", default="16GB", help="the budget of the 100M estimate")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        work = Path(args.work)
        result = {"brute": lambda: child_brute(work), "build": lambda: child_build(work, args.max_index_memory),
                  "faiss": lambda: child_faiss(work)}[args.child]()
        print(json.dumps(result))
        return

    from locktune.index.vector_shards import shard_name, write_shard

    os.environ["LATENCY_QUERIES"] = str(args.latency_queries)
    record = {"vectors": args.vectors, "dim": args.dim, "centres": args.centres, "noise": args.noise,
              "queries": args.queries, "cores": os.cpu_count(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((args.centres, args.dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        vectors = clustered(args.vectors, centres, 1, args.noise)
        np.save(work / "queries.npy", clustered(args.queries, centres, 2, args.noise))
        np.save(work / "vectors_f32.npy", vectors)
        parts, per_shard = [], 250_000  # several shards, as incremental adds leave them
        for number, i in enumerate(range(0, args.vectors, per_shard)):
            write_shard(work, shard_name(number), vectors[i:i + per_shard])
            parts.append({"file": shard_name(number), "rows": len(vectors[i:i + per_shard])})
        (work / "parts.json").write_text(json.dumps({"parts": parts, "dim": args.dim, "flat_max": args.flat_max}))
        del vectors
        record["brute"] = run_child("brute", work)
        record["build"] = run_child("build", work, "--max-index-memory", args.max_index_memory)
        record["faiss"] = run_child("faiss", work)
    record["load_average_after"] = os.getloadavg()
    record["p95_speedup"] = round(record["brute"]["p95_ms"] / record["faiss"]["p95_ms"], 1)
    record["p50_speedup"] = round(record["brute"]["p50_ms"] / record["faiss"]["p50_ms"], 1)
    record["on_paper_100M"] = on_paper(100_000_000, args.dim, args.vectors, record["brute"], record["build"],
                                       record["faiss"], args.paper_max_index_memory)
    print(json.dumps(record, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
