"""A test-only hook: stop the process at a named point so a test can kill it exactly there.

With `LOCKTUNE_TEST_PAUSE_AT=NAME` (or `NAME:N`, the N-th time the point is reached, counting from 1) the
process writes `LOCKTUNE_TEST_PAUSE_FILE` (JSON: the point, the count, and what the caller passed, e.g.
the temporary file's path) and then sleeps until it is killed.  Under torchrun, `LOCKTUNE_TEST_PAUSE_RANK=R`
pauses only rank R (the others run on into their next collective), and `LOCKTUNE_TEST_EXIT_AFTER_S=S` makes
the paused process exit abruptly (`os._exit(17)`, no cleanup, as a crash would) after S seconds instead of
sleeping on: a rank that dies while the others wait for it.  Unset, `pause_point` is one dictionary lookup:
nothing happens in normal runs.
"""

from __future__ import annotations

import json
import os
import time

_reached: dict[str, int] = {}
EXIT_CODE = 17  # what a process stopped by LOCKTUNE_TEST_EXIT_AFTER_S exits with


def pause_point(name: str, **detail: str) -> None:
    """Pause here forever (or exit, see above) if the environment asks for this point."""
    wanted = os.environ.get("LOCKTUNE_TEST_PAUSE_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    only = os.environ.get("LOCKTUNE_TEST_PAUSE_RANK")
    if only is not None and only != os.environ.get("RANK", "0"):
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] != int(nth or 1):
        return
    marker = os.environ.get("LOCKTUNE_TEST_PAUSE_FILE", "locktune-paused.json")
    with open(f"{marker}.part", "w") as f:
        json.dump({"point": name, "count": _reached[name], "pid": os.getpid(), **detail}, f)
    os.replace(f"{marker}.part", marker)  # the test never reads half a marker
    exit_after = os.environ.get("LOCKTUNE_TEST_EXIT_AFTER_S")
    if exit_after is not None:
        time.sleep(float(exit_after))
        os._exit(EXIT_CODE)
    while True:
        time.sleep(60)
