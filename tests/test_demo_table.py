"""The README's demo numbers come from the committed demo results, and CI's comparison can fail.

`make demo` writes runs/demo/; results/demo/ holds the committed copy; scripts/demo_table.py renders README.md's
table from it; .ci/run reruns the demo on a clean clone and compares with scripts/compare_results.py.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "demo"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_demo_table_is_the_committed_results():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_table.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_table_cells_are_the_json_values():
    # independent of render(): every number in the table is found as the json's value in percent, one decimal
    table = _script("demo_table").render(RESULTS)
    results = json.loads((RESULTS / "results.json").read_text())
    for key, metric in [("fashion_mnist", "top1"), ("animal_mnist", "top5"), ("tuxpaint_categories", "top1"),
                        ("tuxpaint_retrieval", "text_to_image_R@1")]:
        assert f"{100 * results[key][metric]:.1f}%" in table
    training = json.loads((RESULTS / "training.json").read_text())
    assert f"{training['first_loss']:.3f} -> {training['final_loss']:.3f}" in table


def test_committed_results_are_the_demo_configs_benchmarks():
    from locktune.config import load_config

    config = load_config("demo.yaml")
    results = json.loads((RESULTS / "results.json").read_text())
    assert set(results) >= set(_script("demo_table").ROWS)
    assert all(result["images"] <= config.eval.max_images_per_benchmark for result in results.values())


def test_stale_readme_is_refused(tmp_path, monkeypatch):
    demo_table = _script("demo_table")
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    results = json.loads((RESULTS / "results.json").read_text())
    shown = f"{100 * results['fashion_mnist']['top1']:.1f}%"
    head, table = text.split(demo_table.BEGIN, 1)
    assert shown in table.split(demo_table.END)[0]
    readme.write_text(head + demo_table.BEGIN + table.replace(shown, "99.9%", 1))
    monkeypatch.setattr(demo_table, "README", readme)
    monkeypatch.setattr(sys, "argv", ["demo_table.py", "--check"])
    assert demo_table.main() == 1
    monkeypatch.setattr(sys, "argv", ["demo_table.py", "--write"])
    assert demo_table.main() == 0 and readme.read_text() == text


@pytest.mark.parametrize("shift, agrees", [(0.004, True), (0.006, False)])
def test_ci_comparison_has_teeth(tmp_path, shift, agrees):
    results = json.loads((RESULTS / "results.json").read_text())
    moved = copy.deepcopy(results)
    moved["fashion_mnist"]["top1"] += shift
    (tmp_path / "a.json").write_text(json.dumps(results))
    (tmp_path / "b.json").write_text(json.dumps(moved))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_results.py"), str(tmp_path / "a.json"),
                           str(tmp_path / "b.json"), "--tolerance", "0.005"], capture_output=True, text=True)
    assert (done.returncode == 0) == agrees, done.stdout + done.stderr
