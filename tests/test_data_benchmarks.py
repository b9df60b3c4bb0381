"""The data benchmarks run end to end at toy sizes (the real numbers are in the README)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_precompute_benchmark_smoke(tmp_path):
    out = tmp_path / "pre.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "precompute_throughput.py"), "--images", "24",
                           "--size", "32", "--batch", "8", "--workers", "0", "--rounds", "1", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["images"] == 24 and report["pipeline_over_bare"] > 0


def test_cache_reader_benchmark_reads_a_synthetic_cache(tmp_path):
    spec = importlib.util.spec_from_file_location("cache_reader", ROOT / "benchmarks" / "cache_reader.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_synthetic(tmp_path / "c", 250, shard_size=100)
    result = bench.read(tmp_path / "c", batches=5, batch=16, access="pread")
    assert result["pairs"] == 250 and result["batches_per_s"] > 0 and result["peak_rss_mb"] > 0
