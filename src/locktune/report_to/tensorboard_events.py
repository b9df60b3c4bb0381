"""`train.report_to: [tensorboard]`: TensorBoard event files in RUN/tensorboard (`tensorboard --logdir
RUN/tensorboard`), through torch's SummaryWriter.  Training values are the series `train/KEY` (KEY as in
train_log.jsonl), evaluation values `TASK/METRIC` as in eval_log.jsonl; a character TensorBoard does not allow in
a tag (`@`) becomes `_` (`validation/image_to_text_R_1`).  A resumed run writes a purge mark at the step after
its checkpoint, so TensorBoard drops what the stopped run wrote past it and no step appears twice."""

from __future__ import annotations

import re
from pathlib import Path

from locktune.report_to import EVAL, SINKS, SinkContext, SinkKind

TENSORBOARD_DIR = "tensorboard"  # in the run folder
_NOT_IN_TAGS = re.compile(r"[^-/\w.]")  # what TensorBoard's own tag cleaning replaces (and warns about)


def tag(name: str, kind: str) -> str:
    """The TensorBoard series of a logged value."""
    return _NOT_IN_TAGS.sub("_", name if kind == EVAL else f"train/{name}")


class TensorBoardEvents:
    def __init__(self, context: SinkContext):
        from torch.utils.tensorboard import SummaryWriter

        purge = context.resumed_at + 1 if context.resumed_at is not None else None
        self.writer = SummaryWriter(log_dir=str(Path(context.run_dir) / TENSORBOARD_DIR), purge_step=purge)

    def log(self, step: int, values: dict[str, float], kind: str) -> None:
        for name, value in values.items():
            self.writer.add_scalar(tag(name, kind), value, global_step=step)
        self.writer.flush()  # watched live: each entry on disk as it is logged

    def close(self) -> None:
        self.writer.close()


SINKS.register("tensorboard")(SinkKind(TensorBoardEvents, extra="tensorboard"))
