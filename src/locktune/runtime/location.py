"""Where locktune keeps derived data (embeddings, parsed source indexes): $LOCKTUNE_CACHE or ~/.cache/locktune."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LOCKTUNE_CACHE") or Path.home() / ".cache" / "locktune")
