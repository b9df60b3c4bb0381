"""`train.keep_best`: the model of the best evaluation so far, as a saved-model folder (RUN/best/) that loads like
any other (`locktune.load`, `eval`, `index`, `serve`), with RUN/best/best.json saying which metric, value and step
it holds.  A resumed run reads that record and replaces the model only when a later evaluation beats it."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from locktune.errors import LocktuneError
BEST_DIR = "best"  # in the run folder
RECORD = "best.json"
DIRECTIONS = ("max", "min")


@dataclass(frozen=True)
class BestMetric:
    name: str  # TASK/METRIC, as evaluation entries name it (validation/image_to_text_R@1)
    direction: str  # max | min

    @property
    def task(self) -> str:
        return self.name.split("/", 1)[0]


def parse_keep_best(text: str) -> BestMetric:
    """`TASK/METRIC` (min for a metric named *loss*, max otherwise) or `TASK/METRIC:max` / `:min`."""
    name, _, direction = text.partition(":")
    if "/" not in name or not name.split("/", 1)[1]:
        raise LocktuneError(f"train.keep_best '{text}' should be TASK/METRIC[:max|:min], e.g. "
                            "validation/image_to_text_R@1 or fashion_mnist/top1")
    if direction and direction not in DIRECTIONS:
        raise LocktuneError(f"train.keep_best '{text}': the direction after ':' is max or min, not '{direction}'")
    metric = name.split("/", 1)[1]
    return BestMetric(name, direction or ("min" if "loss" in metric.lower() else "max"))


@dataclass
class BestRecord:
    metric: str
    direction: str
    value: float
    step: int


class BestModel:
    """Keeps RUN/best/ at the best value of one metric (first process only)."""

    def __init__(self, run_dir: Path, metric: BestMetric, resumed: bool):
        self.folder = Path(run_dir) / BEST_DIR
        self.metric = metric
        self.best = self._earlier() if resumed else None

    def _earlier(self) -> BestRecord | None:
        """A resumed run's best so far, when it was kept for the same metric and direction."""
        path = self.folder / RECORD
        if not path.is_file():
            return None
        try:
            record = BestRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            raise LocktuneError(f"'{path}' is not a best-model record; remove {self.folder} to start the "
                                "best model over") from None
        same = (record.metric, record.direction) == (self.metric.name, self.metric.direction)
        return record if same else None

    def offer(self, model, step: int, values: dict[str, float]) -> bool:
        """Save `model` if its value of the metric beats the best so far; True when it did."""
        if self.metric.name not in values:
            raise LocktuneError(f"train.keep_best: the evaluation has no metric '{self.metric.name}'; it has "
                                + ", ".join(sorted(values)))
        value = float(values[self.metric.name])
        if self.best is not None and not _better(value, self.best.value, self.metric.direction):
            return False
        from locktune.saved_model import save_pretrained

        self.best = BestRecord(self.metric.name, self.metric.direction, value, step)
        staging = self.folder.with_name(f".{BEST_DIR}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        save_pretrained(model, staging)
        (staging / RECORD).write_text(json.dumps(asdict(self.best), indent=1) + "\n")
        shutil.rmtree(self.folder, ignore_errors=True)
        staging.replace(self.folder)
        return True


def _better(value: float, best: float, direction: str) -> bool:
    if math.isnan(value) or math.isnan(best):  # NaN never wins, and anything beats it
        return not math.isnan(value)
    return value > best if direction == "max" else value < best
