"""`train.report_to: [wandb]`: a Weights & Biases run, offline unless $WANDB_MODE says otherwise (no account
and no network needed: `wandb sync RUN/wandb/offline-run-*` uploads it later).  Its files are in RUN/wandb; the
run's config is the run config.  Values are named as in TensorBoard before tag cleaning: `train/KEY` and
`TASK/METRIC`.  A resumed run continues the same wandb run id (kept in RUN/wandb/locktune_run_id), so a sync
appends to it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from locktune.report_to import EVAL, SINKS, SinkContext, SinkKind

WANDB_RUN_ID = Path("wandb") / "locktune_run_id"  # in the run folder: the run id a resumed run continues


class WandbRun:
    def __init__(self, context: SinkContext):
        import wandb

        id_file = Path(context.run_dir) / WANDB_RUN_ID
        id_file.parent.mkdir(parents=True, exist_ok=True)
        resumed = context.resumed_at is not None and id_file.is_file()
        run_id = id_file.read_text().strip() if resumed else secrets.token_hex(4)  # wandb's id alphabet: [a-z0-9]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "locktune"), name=Path(context.run_dir).name,
                              id=run_id, resume="allow", dir=str(context.run_dir),
                              mode=os.environ.get("WANDB_MODE", "offline"), config=context.config.to_dict())

    def log(self, step: int, values: dict[str, float], kind: str) -> None:
        self.run.log({(name if kind == EVAL else f"train/{name}"): value for name, value in values.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


SINKS.register("wandb")(SinkKind(WandbRun, extra="wandb"))
