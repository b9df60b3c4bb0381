"""Where training reports its numbers (`train.report_to`): one sink per file here, picked by name.

Every sink gets the same numbers from the first process only: a training entry every train.log_every steps
(`train_entry`: loss, lr, grad_norm, scale, ...) and, with train.eval_every, an evaluation entry
(`TASK/METRIC`, e.g. `validation/image_to_text_R@1`).  A resumed run appends to what the run wrote before;
steps written after the checkpoint it resumes from are written again, and a sink that keeps series by step
(TensorBoard) drops the earlier copies.  A sink's package is checked before training starts
(`check_report_to`): a missing one is one line naming its pip extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from locktune.registry import Registry

TRAIN, EVAL = "train", "eval"  # the two kinds of entry


@dataclass(frozen=True)
class SinkContext:
    run_dir: Path
    config: object  # the RunConfig (wandb records it)
    resumed_at: int | None  # the step of the checkpoint this call resumed from; None for a new run


class Sink(Protocol):
    def log(self, step: int, values: dict[str, float], kind: str) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SinkKind:
    open: Callable[[SinkContext], Sink]
    extra: str = ""  # the pip extra (locktune.extras) that installs its package; "" for none


SINKS: Registry[SinkKind] = Registry("train.report_to sink")


def _register_all() -> None:
    from locktune.report_to import jsonl_files, tensorboard_events, wandb_run  # noqa: F401  (they register)


def sink_names() -> list[str]:
    _register_all()
    return SINKS.names()


def check_report_to(names: list[str]) -> None:
    """Unknown names (one line listing the choices) and missing packages (one line naming the extra), before
    any data or model is loaded."""
    _register_all()
    from locktune.extras import require_extra

    for name in names:
        kind = SINKS.get(name)
        if kind.extra:
            require_extra(kind.extra, f"train.report_to={name}", f"or leave {name} out of train.report_to")


class Reporting:
    """Every sink of `train.report_to`, fed at once; empty on every process but the first."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    @classmethod
    def open(cls, names: list[str], context: SinkContext, main: bool) -> "Reporting":
        if not main:
            return cls([])
        _register_all()
        return cls([SINKS.get(name).open(context) for name in dict.fromkeys(names)])

    def log(self, step: int, values: dict[str, float], kind: str = TRAIN) -> None:
        for sink in self.sinks:
            sink.log(step, values, kind)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
