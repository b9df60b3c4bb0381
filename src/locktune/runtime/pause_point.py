"""A test-only hook: stop the process at a named point so a test can kill it exactly there.

With `LOCKTUNE_TEST_PAUSE_AT=NAME` (or `NAME:N`, the N-th time the point is reached, counting from 1) the
process writes `LOCKTUNE_TEST_PAUSE_FILE` (JSON: the point, the count, and what the caller passed, e.g.
the temporary file's path) and then sleeps until it is killed.  Unset, `pause_point` is one dictionary
lookup: nothing happens in normal runs.
"""

from __future__ import annotations

import json
import os
import time

_reached: dict[str, int] = {}


def pause_point(name: str, **detail: str) -> None:
    """Pause here forever if the environment asks for this point (tests kill the process here)."""
    wanted = os.environ.get("LOCKTUNE_TEST_PAUSE_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] != int(nth or 1):
        return
    marker = os.environ.get("LOCKTUNE_TEST_PAUSE_FILE", "locktune-paused.json")
    with open(f"{marker}.part", "w") as f:
        json.dump({"point": name, "count": _reached[name], "pid": os.getpid(), **detail}, f)
    os.replace(f"{marker}.part", marker)  # the test never reads half a marker
    while True:
        time.sleep(60)
