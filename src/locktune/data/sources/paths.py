"""Which pair source a path names: "KIND:PATH" explicitly, or a bare path by its shape."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from locktune.data.pairs import PATH_SOURCES, PairSet
from locktune.data.sources.hf_datasets import is_saved_dataset

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")


def path_source(name: str) -> tuple[Callable[[str, int], PairSet], str] | None:
    """(factory, path) for a path-shaped source name; None when the name is not a path (a registry name)."""
    kind, sep, rest = name.partition(":")
    if sep and kind in PATH_SOURCES:
        return PATH_SOURCES.get(kind), rest
    if ".tar" in name or "{" in name:
        return PATH_SOURCES.get("wds"), name
    if name.lower().endswith(MANIFEST_SUFFIXES):
        return PATH_SOURCES.get("manifest"), name
    if name.lower().endswith(".parquet") or is_saved_dataset(Path(name)):
        return PATH_SOURCES.get("hf"), name
    if Path(name).is_dir():
        return PATH_SOURCES.get("folder"), name
    return None
