"""`train.report_to: [jsonl]` (the default): train_log.jsonl, one line per logged step, and eval_log.jsonl, one
line per evaluation (`train.eval_every`), both in the run folder.  A resumed run appends (so a step written
after the last checkpoint may appear twice: the later line is the resumed run's)."""

from __future__ import annotations

import json
from pathlib import Path

from locktune.report_to import EVAL, SINKS, SinkContext, SinkKind

TRAIN_LOG, EVAL_LOG = "train_log.jsonl", "eval_log.jsonl"


class JsonlFiles:
    def __init__(self, context: SinkContext):
        self.run_dir = Path(context.run_dir)
        self.mode = "a" if context.resumed_at is not None else "w"
        self.files: dict[str, object] = {}

    def log(self, step: int, values: dict[str, float], kind: str) -> None:
        name = EVAL_LOG if kind == EVAL else TRAIN_LOG
        if name not in self.files:  # opened at its first line: a run without evaluation has no eval_log.jsonl
            self.files[name] = open(self.run_dir / name, self.mode)
        self.files[name].write(json.dumps({"step": step, **values}) + "\n")
        self.files[name].flush()

    def close(self) -> None:
        for file in self.files.values():
            file.close()


SINKS.register("jsonl")(SinkKind(JsonlFiles))
