"""Progress for long work, on stderr: a live bar (rate, ETA) on a terminal; when stderr is a file or a pipe
(CI logs, `nohup`, `2> log`), one plain line every few seconds with the rate and ETA instead of a bar's
carriage returns.  LOCKTUNE_QUIET=1 silences both; LOCKTUNE_PROGRESS_EVERY sets the line interval
(seconds, default 10)."""

from __future__ import annotations

import os
import sys
import time


def progress(total: int, desc: str, unit: str = "it", enabled: bool = True):
    """`enabled=False` for every process but the first, so torchrun prints one bar."""
    quiet = not enabled or bool(os.environ.get("LOCKTUNE_QUIET"))
    if not quiet and not _is_terminal(sys.stderr):
        return LineProgress(total, desc, unit, float(os.environ.get("LOCKTUNE_PROGRESS_EVERY", "10")))
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                disable=quiet, mininterval=1.0)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """tqdm's `update` / `set_postfix` / `close`, printed as whole lines at most every `every` seconds:
    `training LU: 120/250 steps (48%), 3.1 steps/s, ETA 42s, loss=2.31`."""

    def __init__(self, total: int, desc: str, unit: str, every: float, stream=None, clock=time.monotonic):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.started = self.last = clock()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every:
            self._print()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._print(final=True)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def line(self, final: bool = False) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.n / elapsed
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        if final:
            tail = f"done in {_duration(elapsed)}"
        else:
            eta = (self.total - self.n) / rate if rate > 0 and self.total else None
            tail = f"ETA {_duration(eta)}" if eta is not None else "ETA ?"
        return (f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {rate:.1f} {self.unit}/s, {tail}"
                + (f", {self.postfix}" if self.postfix else ""))

    def _print(self, final: bool = False) -> None:
        self.last = self.clock()
        print(self.line(final), file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
