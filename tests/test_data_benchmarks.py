"""The data benchmarks run end to end at toy sizes (the real numbers are in the README)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from test_benchmarks import check_precompute_report

ROOT = Path(__file__).resolve().parents[1]


def test_precompute_benchmark_smoke(tmp_path):
    out = tmp_path / "pre.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "precompute_throughput.py"), "--images", "24",
                           "--size", "32", "--batch", "8", "--workers", "0", "--rounds", "1", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert (report["pipeline"], report["tower"], report["size"], report["source"]) == ("sharded", "mobilenet_v2", 32,
                                                                                      "jpeg")
    # MobileNetV2's feature layers: 3,504,872 parameters less the 1280 x 1000 + 1000 classifier = 2,223,872.
    assert report["tower_params_m"] == 2.2 and report["bare_layout"] == "channels_last"
    check_precompute_report(report, images=24, batch=8, rounds=1)


def test_cache_reader_benchmark_reads_a_synthetic_cache(tmp_path):
    spec = importlib.util.spec_from_file_location("cache_reader", ROOT / "benchmarks" / "cache_reader.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_synthetic(tmp_path / "c", 250, shard_size=100)
    result = bench.read(tmp_path / "c", batches=5, batch=16, access="pread")
    assert result["pairs"] == 250 and result["access"] == "pread"
    assert result["peak_rss_mb"] >= max(result["rss_before_open_mb"], result["rss_after_reading_mb"]) > 0
    # What the reader times reading is what was written: the synthetic rows regenerated here from the same
    # generator (seed 0, one draw per 100-row shard, stored as float16) and the captions by their row number.
    from locktune.cache.sharded import ShardedCache

    rng = np.random.default_rng(0)
    expected = np.concatenate([rng.standard_normal((n, bench.DIM), dtype=np.float32) for n in (100, 100, 50)])
    cache = ShardedCache.open(tmp_path / "c", access="pread")
    assert len(cache) == 250 and cache.dim == bench.DIM
    pick = np.array([0, 99, 100, 199, 200, 249, 7])
    np.testing.assert_array_equal(np.asarray(cache.rows(pick), np.float32), expected[pick].astype(np.float16))
    assert [cache.captions[int(i)] for i in pick] == [[f"a photo of thing number {i}"] for i in pick]
