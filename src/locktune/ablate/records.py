"""One arm's result as a JSON file (its config, training curve and every evaluation metric), and the
per-arm summary across seeds (mean, spread) that reports and findings read.  Reports never see a model:
their numbers come from these files only."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from locktune.errors import LocktuneError

RECORD = "arm.json"


def write_record(record: dict, path: Path) -> None:
    """Atomic: a killed grid leaves either the whole record or none (and the arm is redone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_records(folder: Path) -> list[dict]:
    """Every arm record under `folder` (any depth), in a stable order."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).rglob("*.json")) if _is_record(p)]


def _is_record(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"grid", "arm", "seed", "eval"} <= set(data)


def metric(record: dict, key: str) -> float | None:
    """`task|metric` from the record's evaluation (e.g. `fashion_mnist|top1`), `train|final_loss`, or a
    summary value an evaluator registers over its tasks (`mean_zero_shot_top1`, `mean_retrieval_R@1`, ...)."""
    summary = summary_values().get(key)
    if summary is not None:
        return summary(record)
    task, _, name = key.partition("|")
    section = record["train"] if task == "train" else record["eval"].get(task, {})
    value = section.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def per_image(record: dict, task: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A task's per-image outcomes, for the image bootstrap: (correct [images] of 0/1, labels [images]), from
    record["eval"][task]["per_image"] = {"correct": "0110...", "labels": [...]} ('1' = top-1 right; the same
    image order for every model); None when the record has none for that task."""
    data = record.get("eval", {}).get(task, {}).get("per_image")
    if not isinstance(data, dict) or not isinstance(data.get("correct"), str) or "labels" not in data:
        return None
    correct = np.frombuffer(data["correct"].encode("ascii"), dtype=np.uint8) - ord("0")
    labels = np.asarray(data["labels"], dtype=np.int64)
    if correct.size != labels.size or (correct > 1).any():
        raise LocktuneError(f"record {record.get('arm')}-s{record.get('seed')}, task '{task}': per_image has "
                         f"{correct.size} outcomes (only '0'/'1' allowed) for {labels.size} labels")
    return correct.astype(np.int8), labels


def summary_values() -> dict:
    """key -> record -> value, from every evaluator's registered summaries (`eval/evaluators/`)."""
    from locktune.eval.evaluation import of_kind, reporters

    def over(reporter, summary):
        return lambda record: summary.value(of_kind(record["eval"], reporter.kind))

    return {summary.key: over(reporter, summary) for reporter in reporters() for summary in reporter.summaries}


@dataclass(frozen=True)
class Summary:
    """One arm's metric over its seeds: mean, sample standard deviation (0 for one seed), values."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float:
        if len(self.values) < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))

    @property
    def seeds(self) -> int:
        return len(self.values)


def summarize(records: list[dict], arm: str, key: str) -> Summary | None:
    values = [metric(r, key) for r in records if r["arm"] == arm]
    values = [v for v in values if v is not None]
    return Summary(tuple(values)) if values else None


def arms_in_order(records: list[dict]) -> list[str]:
    out: list[str] = []
    for r in sorted(records, key=lambda r: r.get("order", 0)):
        if r["arm"] not in out:
            out.append(r["arm"])
    return out
