"""The GPU check in one command (`make gpu-check`): install, CUDA tests, benchmarks, one JSON and a log.

On a bare GPU machine with no network (torch with CUDA already there):
  1. install what `benchmarks/gpu_wheels.sh` fetched beforehand into benchmarks/wheels/ (pip --no-index);
  2. record the machine: torch's and nvidia-smi's device names, memory, the part and its dense bf16 peak;
  3. run the CUDA tests (tests/test_gpu.py: gradient cache with dropout and bf16 on CUDA, NCCL with one and two
     processes, ONNX on onnxruntime's CUDA provider) and the device tests (tests/test_device.py, which CI runs on
     the fake device) on CUDA (LOCKTUNE_TEST_DEVICE=cuda);
  4. run benchmarks/gpu_text_tower.py and benchmarks/precompute_throughput.py;
  5. write RESULTS_DIR/gpu_check.json (everything above, each step's exit code and seconds) and
     RESULTS_DIR/gpu_check.log (every command and its output).
Each step gets what is left of --budget-s (default 450 s; the Makefile also wraps it in `timeout 480`), so the
whole check ends within 8 minutes and a step that runs over is killed and reported, not waited for.

    python benchmarks/gpu_check.py                    # on the GPU machine (exit 1 if a step failed)
    python benchmarks/gpu_check.py --smoke            # the same script on CPU: tiny sizes, CUDA tests skip
    GPU_CHECK_ALLOW_CPU=1 make gpu-check              # the same, through make
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "benchmarks" / "wheels"

# (name, seconds at most) per step, on the GPU and in the CPU smoke run.
CAPS = {"install": 90, "tests": 200, "gpu_text_tower": 150, "precompute": 90}


def text_tower_args(smoke: bool) -> list[str]:
    if smoke:
        return ["--tiny", "--device", "cpu", "--batches", "16", "--max-batch", "64", "--chunk", "16", "--warmup", "1",
                "--iters", "1", "--no-open-clip"]
    return ["--batches", "1024,4096", "--max-batch", "32768", "--chunk", "4096", "--warmup", "2", "--iters", "5"]


def precompute_args(smoke: bool) -> list[str]:
    if smoke:
        return ["--pipeline", "features", "--images", "8", "--batch-size", "4", "--workers", "0", "--rounds", "1",
                "--device", "cpu"]
    return ["--images", "2048", "--batch-size", "256", "--workers", "12", "--rounds", "2", "--device", "cuda",
            "--precision", "bf16"]


class Check:
    def __init__(self, out_dir: Path, budget_s: float):
        self.out_dir, self.deadline = out_dir, time.monotonic() + budget_s
        self.log = open(out_dir / "gpu_check.log", "a", encoding="utf-8")
        self.steps: dict[str, dict] = {}

    def note(self, text: str) -> None:
        line = f"[{datetime.now(timezone.utc).strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def run(self, name: str, command: list[str], env: dict | None = None) -> int:
        """Run one step in its own process group, its output into the log; kill the group at its time cap."""
        left = self.deadline - time.monotonic()
        cap = min(CAPS[name], left - 5)
        if cap < 5:
            self.steps[name] = {"rc": None, "seconds": 0, "skipped": "no time left in the budget"}
            self.note(f"{name}: skipped, no time left")
            return 1
        self.note(f"{name}: {' '.join(command)} (at most {cap:.0f} s)")
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=cap)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
        seconds = round(time.monotonic() - started, 1)
        self.steps[name] = {"rc": rc, "seconds": seconds, "timed_out": timed_out}
        self.note(f"{name}: exit {rc} in {seconds} s{' (timed out)' if timed_out else ''}")
        return rc


def child_env() -> dict:
    # The checkout's own code and test helpers, installed or not; quiet progress bars in the log.
    paths = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]),
            "LOCKTUNE_QUIET": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def test_summary(junit: Path) -> dict:
    """Counts and, per test, its outcome (and the reason for a skip or failure) from pytest's JUnit XML."""
    if not junit.exists():
        return {"error": "pytest wrote no report"}
    cases, counts = {}, {"passed": 0, "failed": 0, "skipped": 0}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, reason = "passed", None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                reason = (found.get("message") or "")[:300]
        counts[outcome] += 1
        cases[name] = {"outcome": outcome, **({"reason": reason} if reason else {})}
    return {**counts, "tests": cases}


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return {"error": f"no report ({type(error).__name__})"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", default=os.environ.get("GPU_CHECK_ALLOW_CPU") == "1",
                        help="run on CPU with tiny sizes (CUDA tests skip); also GPU_CHECK_ALLOW_CPU=1")
    parser.add_argument("--out-dir", default=None, help="results folder (default results/gpu-check/<UTC time>)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="all steps together, seconds")
    parser.add_argument("--no-install", action="store_true", help="skip installing benchmarks/wheels")
    args = parser.parse_args()

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out_dir or ROOT / "results" / "gpu-check" / stamp)
    out_dir.mkdir(parents=True, exist_ok=True)
    check = Check(out_dir, args.budget_s)
    report: dict = {"started": stamp, "mode": "smoke (CPU)" if args.smoke else "gpu", "results_dir": str(out_dir)}
    env = child_env()

    wheels = sorted(WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    if args.smoke or args.no_install or not wheels:
        why = "smoke run" if args.smoke else ("--no-install" if args.no_install else f"no wheels in {WHEELS}")
        check.steps["install"] = {"rc": None, "skipped": why}
        check.note(f"install: skipped ({why})")
    else:
        # A system Python may be marked externally managed (PEP 668): this machine is ours to change.
        check.run("install", [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(WHEELS),
                              "--no-deps", *map(str, wheels)], {**env, "PIP_BREAK_SYSTEM_PACKAGES": "1"})

    import torch  # after the install: what the machine has

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_device import device_report

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        check.note("no CUDA device visible: run with --smoke (or GPU_CHECK_ALLOW_CPU=1) for the CPU smoke run")
        report.update(machine=device_report(torch.device("cpu")), ok=False, error="no CUDA device visible")
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1))
        return 1
    report["machine"] = device_report(torch.device("cuda" if cuda and not args.smoke else "cpu"))
    check.note(f"machine: {json.dumps(report['machine'])}")

    junit = out_dir / "cuda_tests.xml"
    # The CUDA-only tests, and the device tests (tests/test_device.py, the fake device's in CI) again on CUDA.
    # (The smoke run keeps to the CUDA tests, which skip: CI runs the device tests on the fake device anyway.)
    on_gpu = cuda and not args.smoke
    files = ["tests/test_gpu.py", "tests/test_device.py"] if on_gpu else ["-m", "cuda", "tests/test_gpu.py"]
    check.run("tests", [sys.executable, "-m", "pytest", *files, "-q", "-rs", "-p", "no:cacheprovider",
                        f"--junitxml={junit}"], {**env, "LOCKTUNE_TEST_DEVICE": "cuda"} if on_gpu else env)
    report["cuda_tests"] = test_summary(junit)

    tower_json = out_dir / "gpu_text_tower.json"
    check.run("gpu_text_tower", [sys.executable, "benchmarks/gpu_text_tower.py", *text_tower_args(args.smoke),
                                 "--out", str(tower_json)], env)
    report["gpu_text_tower"] = read_json(tower_json)

    precompute_json = out_dir / "precompute_throughput.json"
    check.run("precompute", [sys.executable, "benchmarks/precompute_throughput.py", *precompute_args(args.smoke),
                             "--out", str(precompute_json)], env)
    report["precompute_throughput"] = read_json(precompute_json)

    report["steps"] = check.steps
    failed = [name for name, step in check.steps.items() if step.get("rc") not in (0, None)]
    tests = report["cuda_tests"]
    if tests.get("failed") or "error" in tests:
        failed.append("cuda_tests")
    report["ok"], report["failed"] = not failed, failed
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1))
    check.note(f"{'ok' if not failed else 'FAILED: ' + ', '.join(failed)}; {out_dir / 'gpu_check.json'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
