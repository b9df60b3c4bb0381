"""Progress bars for long work: rate and ETA on stderr, quiet when LOCKTUNE_QUIET is set."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress(total: int, desc: str, unit: str = "it", enabled: bool = True) -> tqdm:
    """`enabled=False` for every process but the first, so torchrun prints one bar."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                disable=not enabled or bool(os.environ.get("LOCKTUNE_QUIET")), mininterval=1.0)
