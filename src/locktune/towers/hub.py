"""Where a tower the user brings comes from: a local folder, or the local Hugging Face hub cache.

No surprise downloads: locktune reads the hub cache with `local_files_only` and reaches the network only
when the user allows it with `LOCKTUNE_ALLOW_DOWNLOAD=1` (and never when `HF_HUB_OFFLINE=1`).  A model
that is not there is one line: which id, where it looked, how to get it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from locktune.errors import LocktuneError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
# What a download (only with LOCKTUNE_ALLOW_DOWNLOAD=1) fetches: configs, tokenizer files, safetensors
# weights; not a repo's TensorFlow, Flax or ONNX copies.
FETCHED = ["*.json", "*.txt", "*.model", "*.safetensors", "*/*.json"]


@dataclass(frozen=True)
class LocalModel:
    spec: str  # as the user wrote it (id, id@revision, or folder)
    folder: Path  # a local folder holding the model's files
    revision: str | None  # the hub commit the folder is a snapshot of, or None for a plain folder


def downloads_allowed() -> bool:
    """True only when the user opted in and did not also ask for offline mode."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    return os.environ.get("LOCKTUNE_ALLOW_DOWNLOAD", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # an old huggingface_hub: its default place
        return os.path.expanduser("~/.cache/huggingface/hub")


def resolve_model(spec: str, what: str) -> LocalModel:
    """`spec` (a folder, `org/name` or `org/name@revision`) -> a local folder.  `what` names the tower in
    messages ("image tower 'hf:org/name'")."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return LocalModel(spec, path.resolve(), None)
    if path.exists():
        raise LocktuneError(f"{what}: '{spec}' is a file, not a model folder; give the folder holding config.json")
    repo_id, _, revision = spec.partition("@")
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in repo_id.strip("/").split("/", 1)[-1] \
        or repo_id.count("/") > 1
    if looks_like_path:
        raise LocktuneError(f"{what}: no folder '{spec}' (and it is not a hub id like org/name); check the path")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # transformers depends on it, so this is a broken environment
        raise LocktuneError(f"{what}: huggingface_hub is not installed; pip install huggingface_hub")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, local_files_only=not downloads_allowed(),
                                        allow_patterns=FETCHED if downloads_allowed() else None))
        if downloads_allowed() and not weight_files(folder):  # an old repo with pickled weights only
            folder = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=FETCHED + ["*.bin"]))
    except Exception as error:
        how = ("LOCKTUNE_ALLOW_DOWNLOAD=1 lets locktune download it" if not downloads_allowed() else
               f"the download failed ({type(error).__name__}: {str(error).splitlines()[0][:160]})")
        raise LocktuneError(
            f"{what}: '{repo_id}'{' at revision ' + revision if revision else ''} is not a local folder and is not "
            f"in the Hugging Face cache ({_hub_cache_dir()}). Download it once with `hf download {repo_id}` "
            f"(or `huggingface-cli download {repo_id}`), or give a folder from save_pretrained; {how}"
            + (" (HF_HUB_OFFLINE=1 forbids downloads)" if os.environ.get("HF_HUB_OFFLINE") else "")) from None
    return LocalModel(spec, folder, folder.name if folder.parent.name == "snapshots" else revision or None)


def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files (a sharded checkpoint's shards too), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                  and not p.name.startswith(("optimizer", "scheduler", "training_args")))


def folder_fingerprint(folder: Path, extra_files: tuple[str, ...] = ("config.json",)) -> str:
    """sha256 over the weight files' and config's names and contents: a different checkpoint under the same
    name never shares a fingerprint.  'random' when the folder holds no weights."""
    from locktune.towers.image.base import file_sha256

    files = weight_files(folder)
    if not files:
        return "random"
    digest = hashlib.sha256()
    for path in files + [folder / name for name in extra_files if (folder / name).is_file()]:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode() + b"\0")
    return digest.hexdigest()[:16]


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LocktuneError(f"{what}: cannot read '{path}' ({error}); the model folder looks damaged")
    if not isinstance(data, dict):
        raise LocktuneError(f"{what}: '{path}' should hold a JSON object")
    return data


def check_weight_files(folder: Path, what: str) -> None:
    """Every safetensors file of the folder checked from its header (sizes, shapes, byte ranges) before
    transformers or safetensors reads a tensor: a truncated or lying file is one line saying to fetch it again."""
    from locktune.safe_files import check_safetensors

    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            check_safetensors(path, what, "download it again (`hf download ID`), or write it again with "
                              "model.save_pretrained(FOLDER)")


def require_config(folder: Path, what: str) -> None:
    if not (folder / "config.json").is_file():
        raise LocktuneError(f"{what}: '{folder}' has no config.json, so it is not a Hugging Face model folder; give "
                            "the folder that save_pretrained wrote (config.json + weights)")
