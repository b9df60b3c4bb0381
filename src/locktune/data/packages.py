"""Where the data packages put their files, with an install hint when one is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from locktune.errors import MissingDataPackage


def debian_path(path: str, package: str, what: str) -> Path:
    """A folder or file installed by a Debian package."""
    found = Path(path)
    if not found.exists():
        raise MissingDataPackage(what, package, f"sudo apt-get install --no-install-recommends {package} "
                                 "(or run `make setup`, which installs it)")
    return found


def npm_package_path(name: str, version: str, what: str) -> Path:
    """An npm package's folder under `npm_prefix()` ($LOCKTUNE_NPM_PREFIX, else ~/.local/share/locktune/npm)."""
    from locktune.data.offline_assets import npm_prefix

    folder = npm_prefix() / "node_modules" / name
    if (folder / "package.json").is_file():
        return folder
    raise MissingDataPackage(what, f"{name}@{version} (npm)",
                             f"locktune data install (or npm install --prefix {npm_prefix()} {name}@{version}; "
                             "set LOCKTUNE_NPM_PREFIX if you installed it elsewhere)")


def python_package_path(module: str, pip_spec: str, what: str) -> Path:
    """A Python package's folder, found without importing it (some import heavy frameworks)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        from locktune.data.offline_assets import pip_install

        raise MissingDataPackage(what, pip_spec, pip_install(pip_spec))
    return Path(list(spec.submodule_search_locations)[0])
