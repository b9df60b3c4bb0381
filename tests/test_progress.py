"""Progress written to a file or pipe: whole lines at an interval, with rate and ETA (no carriage returns)."""

from __future__ import annotations

import io

from locktune.progress import LineProgress, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_prints_whole_lines_with_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(100, "training LU", "step", every=10.0, stream=out, clock=clock)
    for _ in range(50):
        clock.now += 0.5  # 2 steps/s
        bar.set_postfix(loss="2.300")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 3  # at 10 s, at 20 s, and the closing line (not one per step, not two per step)
    assert lines[0] == "training LU: 20/100 step (20%), 2.0 step/s, ETA 40s, loss=2.300"
    assert lines[-1] == "training LU: 50/100 step (50%), 2.0 step/s, done in 25s, loss=2.300"


def test_progress_picks_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("LOCKTUNE_QUIET", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress(10, "x"), LineProgress)
    monkeypatch.setenv("LOCKTUNE_QUIET", "1")
    bar = progress(10, "x")
    assert not isinstance(bar, LineProgress) and bar.disable
