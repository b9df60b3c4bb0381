"""Benchmark scripts run end to end on CPU with tiny shapes: the GPU text-tower benchmark (no GPU here), the
precompute-throughput benchmark with an hf: image tower, and `make gpu-check`'s script in its smoke mode."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


TINY_TEXT = {"width": 64, "layers": 2, "heads": 2, "tokens": 16, "vocab": 1000, "embed": 64, "image_dim": 96}


def check_text_tower_report(report: dict, batch: int, max_batch: int, chunk: int) -> None:
    """What gpu_text_tower.py computes besides time, against its docstring: the tiny shape, both losses side by
    side at the same batch (and chunk), integer pairs/s, and each `*_speed_vs_first` the ratio of those rates."""
    assert report["shape"] == TINY_TEXT and report["losses"] == ["global", "sigmoid"]
    row, top = report["rows"][0], report["max_batch"]
    assert len(report["rows"]) == 1 and (row["batch"], row["loss"]) == (batch, "global")
    assert (top["batch"], top["chunk"], top["loss"]) == (max_batch, chunk, "global")
    assert report["machine"]["name"] == "cpu" and row["fraction_of_peak"] is None  # no CPU peak
    assert row["locktune_peak_gib"] is None and row["sigmoid_peak_gib"] is None and top["peak_gib"] is None  # no GPU
    for rate in (row["locktune_pairs_s"], row["sigmoid_pairs_s"], top["pairs_s"], top["sigmoid_pairs_s"]):
        assert isinstance(rate, int) and rate > 0
    assert row["sigmoid_speed_vs_first"] == round(row["sigmoid_pairs_s"] / row["locktune_pairs_s"], 3)
    assert top["sigmoid_speed_vs_first"] == round(top["sigmoid_pairs_s"] / top["pairs_s"], 3)


def check_precompute_report(report: dict, images: int, batch: int, rounds: int) -> None:
    """What precompute_throughput.py computes besides time, against its docstring: every round of both arms
    over the same images, the best of each arm, their ratio and the median of the paired ratios."""
    rates, best = report["images_per_s"], report["best_images_per_s"]
    assert report["images"] == images and report["batch"] == batch
    assert len(rates["bare_forward"]) == len(rates["pipeline"]) == rounds
    assert len(report["cpu_ms_per_image"]["bare_forward"]) == len(report["cpu_ms_per_image"]["pipeline"]) == rounds
    assert best == {arm: max(values) for arm, values in rates.items()}
    # The reported rates are rounded to 0.01 images/s and the ratios to 0.001: recomputed from the rates, a
    # ratio p / b agrees within p / b x (0.005 / p + 0.005 / b) + 0.0005.
    def near(reported: float, p: float, b: float) -> bool:
        return abs(reported - p / b) <= p / b * (0.005 / p + 0.005 / b) + 0.0005 + 1e-9

    assert near(report["pipeline_over_bare"], best["pipeline"], best["bare_forward"])
    pairs = sorted(zip(rates["pipeline"], rates["bare_forward"]), key=lambda pb: pb[0] / pb[1])
    if rounds % 2:  # the median is one round's ratio
        assert near(report["paired_ratio_median"], *pairs[rounds // 2])
    else:
        assert report["paired_ratio_median"] == pytest.approx(
            statistics.median(p / b for p, b in pairs), rel=0.01)


@pytest.mark.slow
def test_gpu_benchmark_script_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_text_tower.py"), "--tiny", "--device", "cpu",
                           "--batches", "32", "--max-batch", "256", "--chunk", "64", "--warmup", "1", "--iters", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    check_text_tower_report(json.loads(out.read_text()), batch=32, max_batch=256, chunk=64)


def _precompute(tmp_path, *extra):
    out = tmp_path / "precompute.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "precompute_throughput.py"), "--pipeline",
                           "features", "--images", "8", "--batch-size", "4", "--workers", "1", "--rounds", "1",
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_precompute_benchmark_takes_an_hf_tower(tmp_path):
    from hf_tiny import SIZE, save_vision

    folder = save_vision("vit", tmp_path / "vit")
    report = _precompute(tmp_path, "--tower", f"hf:{folder}")
    assert report["tower"] == f"hf:{folder}" and report["size"] == SIZE and report["bare_layout"] == "plain"
    assert (report["pipeline"], report["workers"], report["source"]) == ("features", 1, "jpeg")
    check_precompute_report(report, images=8, batch=4, rounds=1)
    # The tower's size, counted by transformers itself from the folder.
    from transformers import AutoModel

    assert report["tower_params_m"] == round(sum(p.numel() for p in AutoModel.from_pretrained(folder).parameters())
                                             / 1e6, 1)


@pytest.mark.slow
def test_precompute_benchmark_makes_a_small_vit(tmp_path):
    """--make-small-vit writes a ViT-S/16-shaped folder (one layer here) and benchmarks it."""
    report = _precompute(tmp_path, "--make-small-vit", str(tmp_path / "vits"), "--vit-layers", "1",
                         "--images", "4")
    config = json.loads((tmp_path / "vits" / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["intermediate_size"]) == (384, 6, 1536)
    assert (config["image_size"], config["patch_size"], config["num_hidden_layers"]) == (224, 16, 1)
    assert (tmp_path / "vits" / "preprocessor_config.json").is_file()
    assert report["tower"].startswith("hf:") and report["size"] == 224 and report["images"] == 4


def test_gpu_peak_is_the_parts_dense_bf16_datasheet_figure():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_device import peak_for

    # Names as torch.cuda.get_device_name reports them; NVIDIA's sparse figures halved (gpu_device.py).
    assert peak_for("NVIDIA H200") == ("H200 SXM", 989.0)
    assert peak_for("NVIDIA H200 NVL") == ("H200 NVL", 835.0)
    assert peak_for("NVIDIA H100 80GB HBM3") == ("H100 SXM5", 989.0)
    assert peak_for("NVIDIA H100 PCIe") == ("H100 PCIe", 756.0)
    assert peak_for("NVIDIA H100 NVL") == ("H100 NVL", 835.0)
    assert peak_for("NVIDIA GeForce RTX 4090") == (None, None)


@pytest.mark.slow
def test_gpu_check_smoke_run_on_cpu(tmp_path):
    """`make gpu-check`'s script end to end on CPU (`--smoke`): the CUDA tests are collected and skip with their
    reason, both benchmarks run at tiny sizes, and one JSON and one log come out."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["mode"] == "smoke (CPU)" and report["machine"]["name"] == "cpu"
    tests = report["cuda_tests"]
    assert tests["skipped"] >= 6 and tests["failed"] == 0
    assert all("CUDA" in t["reason"] for t in tests["tests"].values())
    assert {"test_gpu::test_cached_step_equals_whole_step_with_dropout_on_cuda",
            "test_gpu::test_global_loss_over_nccl_equals_float64_reference[2]"} <= set(tests["tests"])
    # Each benchmark's own report, at the smoke sizes gpu_check.py passes it (text_tower_args, precompute_args).
    check_text_tower_report(report["gpu_text_tower"], batch=16, max_batch=64, chunk=16)
    check_precompute_report(report["precompute_throughput"], images=8, batch=4, rounds=1)
    assert all(report["steps"][s]["rc"] == 0 for s in ("tests", "gpu_text_tower", "precompute"))
    log = (tmp_path / "gpu_check.log").read_text()
    assert "gpu_text_tower: exit 0" in log and "precompute: exit 0" in log


@pytest.mark.slow
def test_search_load_test_runs_both_arms_against_a_served_model(tmp_path):
    """The concurrent load test: `locktune serve` in its own process, n requests at once from the bare
    asyncio client, one-at-a-time and batched arms per round, every reply checked (200 and k results)."""
    out = tmp_path / "search.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_latency.py"), "--images", "300",
                           "--queries", "30", "--k", "5", "--concurrent", "30", "--rounds", "1", "--skip-sequential",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())["concurrent"]
    assert record["errors"] == 0 and len(record["p95_ratio_per_round"]) == 1
    one, batched = record["max_batch=1"][0], record["max_batch=64"][0]
    assert one["requests"] == batched["requests"] == 30
    assert one["text_tower_calls"] >= 30 + 8  # every query (and the 8 warm-up ones) on its own call
    assert batched["text_tower_calls"] < one["text_tower_calls"]
