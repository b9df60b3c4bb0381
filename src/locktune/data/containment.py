"""Whether a path stays inside a folder once links and `..` are resolved: a data source or a benchmark
folder reads its own files, not whatever a symbolic link or a `../../` entry reaches."""

from __future__ import annotations

from pathlib import Path


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, resolved, is `root` or lies under it (`root` already resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        return False
