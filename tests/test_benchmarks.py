"""The GPU benchmark script runs end to end on CPU with a tiny tower shape (no GPU here)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_script_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_text_tower.py"), "--tiny", "--device", "cpu",
                           "--batches", "32", "--max-batch", "256", "--chunk", "64", "--warmup", "1", "--iters", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["rows"][0]["batch"] == 32 and report["rows"][0]["locktune_pairs_s"] > 0
    assert report["max_batch"]["batch"] == 256 and report["max_batch"]["pairs_s"] > 0
