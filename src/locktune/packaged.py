"""Files that ship inside the package (run configs, study grids), found the same way from a checkout
and from a pip install: a path that exists is used as given, otherwise the name is looked up among the
shipped configs (`demo.yaml`, `studies/towers_r3.yaml`; a leading `configs/` is accepted)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from locktune.errors import LocktuneError


def configs_folder() -> Path:
    """The shipped configs: `locktune/configs/` inside the installed package."""
    return Path(str(files("locktune") / "configs"))


def shipped_configs(sub: str = "") -> list[str]:
    """Names of the shipped YAML files, relative to the configs folder (e.g. 'studies/towers_r3.yaml')."""
    root = configs_folder()
    return sorted(str(p.relative_to(root)) for p in (root / sub).glob("*.yaml"))


def find_config(path: str | Path, what: str = "config file") -> Path:
    """A config path as given if it exists, else the shipped config of that name; one-line error otherwise."""
    given = Path(path)
    if given.is_file():
        return given
    name = str(path).removeprefix("configs/")
    shipped = configs_folder() / name
    if shipped.is_file():
        return shipped
    sub = "studies" if "studies" in name or what.startswith("grid") else ""
    raise LocktuneError(f"{what} '{path}' does not exist here or among the shipped configs "
                        f"({', '.join(shipped_configs(sub)) or 'none'})")
