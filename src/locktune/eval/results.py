"""A run's evaluation results: a JSON file (benchmark -> metric -> value, with its kind and the model and dataset
fingerprints), a plain-text table for the terminal, and markdown tables with reference points (chance, the
image tower's own supervised classifier) beside the model's numbers, as each evaluator reports its kind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from locktune.eval.evaluation import REPORTERS, kind_of, of_kind, reporters


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits): which model produced the numbers."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def write_results(results: dict[str, dict[str, float]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def _cell(key: str, value) -> str:
    if "loss" in key:
        return f"{value:.3f}"
    return f"{100 * value:.1f}%"


def results_table(results: dict[str, dict[str, float]]) -> str:
    """One line per result: its kind's headline metrics (and the tower's supervised classifier)."""
    reporters()  # registers every kind
    lines = []
    for name, metrics in results.items():
        headline = REPORTERS.get(kind_of(metrics)).headline
        cells = [f"{k.split(':')[-1]}={_cell(k, metrics[k])}" for k in headline if k in metrics]
        if "supervised_top1" in metrics:
            cells.append(f"supervised_top1={_cell('', metrics['supervised_top1'])}")
        if "skipped" in metrics:
            cells.append(f"skipped: {metrics['skipped']}")
        count = metrics.get("images", metrics.get("pairs", metrics.get("batch_size", "?")))
        lines.append(f"{name:<26} {'  '.join(cells)}  (n={count})")
    return "\n".join(lines)


def markdown_table(results: dict[str, dict]) -> str:
    """One markdown table per kind of result, each as its evaluator reports it (numbers beside chance)."""
    out = []
    for reporter in reporters():
        mine = of_kind(results, reporter.kind)
        if mine:
            out += reporter.markdown(mine)
    return "\n".join(out)
