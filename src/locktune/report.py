"""Results: a JSON file (benchmark -> metric -> value) and a plain-text table for the terminal."""

from __future__ import annotations

import json
from pathlib import Path

HEADLINE = {  # the metrics a table shows per benchmark kind, in order
    "classification": ["top1", "top5", "mean_per_class_recall", "chance_top1"],
    "retrieval": ["image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5", "chance_R@1"],
}


def write_results(results: dict[str, dict[str, float]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def results_table(results: dict[str, dict[str, float]]) -> str:
    lines = []
    for name, metrics in results.items():
        kind = "classification" if "top1" in metrics else "retrieval"
        cells = [f"{k}={100 * metrics[k]:.1f}%" for k in HEADLINE[kind] if k in metrics]
        lines.append(f"{name:<22} {'  '.join(cells)}  (n={metrics.get('images', '?')})")
    return "\n".join(lines)
