"""Results: a JSON file (benchmark -> metric -> value, with model and dataset fingerprints), a plain-text
table for the terminal, and a markdown table with reference points (chance, the image tower's own
supervised classifier) beside the model's numbers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HEADLINE = {  # the metrics a table shows per benchmark kind, in order
    "classification": ["top1", "top5", "mean_per_class_recall", "chance_top1"],
    "retrieval": ["image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5", "chance_R@1"],
    "multilingual": ["mean:image_to_text_R@1", "mean:image_to_text_R@5", "mean:text_to_image_R@1",
                     "mean:text_to_image_R@5", "mean:chance_R@1"],
    "fewshot": ["1shot_top1", "5shot_top1", "10shot_top1", "25shot_top1", "chance_top1"],
    "ood_loss": ["train_loss", "heldout_loss", "chance_loss"],
}


def kind_of(metrics: dict) -> str:
    if "train_loss" in metrics:
        return "ood_loss"
    if "languages" in metrics:
        return "multilingual"
    if "1shot_top1" in metrics or "seeds" in metrics:
        return "fewshot"
    return "classification" if "top1" in metrics else "retrieval"


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
    lines = []
    for name, metrics in results.items():
        kind = kind_of(metrics)
        cells = [f"{k.split(':')[-1]}={_cell(k, metrics[k])}" for k in HEADLINE[kind] if k in metrics]
        if "supervised_top1" in metrics:
            cells.append(f"supervised_top1={_cell('', metrics['supervised_top1'])}")
        count = metrics.get("images", metrics.get("batch_size", "?"))
        lines.append(f"{name:<26} {'  '.join(cells)}  (n={count})")
    return "\n".join(lines)


def _pct(metrics: dict, key: str, std_key: str | None = None) -> str:
    if key not in metrics:
        return "-"
    text = f"{100 * metrics[key]:.1f}"
    if std_key and std_key in metrics:
        text += f" ± {100 * metrics[std_key]:.1f}"
    return text


def markdown_table(results: dict[str, dict]) -> str:
    """One markdown table per kind, the model's numbers beside chance (and the supervised classifier)."""
    out = []
    zero_shot = {n: m for n, m in results.items() if kind_of(m) == "classification"}
    if zero_shot:
        out += ["| zero-shot classification | images | classes | top-1 | top-5 | mean per-class recall "
                "| chance top-1 | tower's supervised classifier top-1 |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {n} | {m['images']} | {round(1 / m['chance_top1'])} | {_pct(m, 'top1')} | {_pct(m, 'top5')} | "
                f"{_pct(m, 'mean_per_class_recall')} | {_pct(m, 'chance_top1')} | {_pct(m, 'supervised_top1')} |"
                for n, m in zero_shot.items()]
        out.append("")
    retrieval = {n: m for n, m in results.items() if kind_of(m) == "retrieval"}
    multilingual = {n: m for n, m in results.items() if kind_of(m) == "multilingual"}
    if retrieval or multilingual:
        out += ["| retrieval (%) | images | I->T R@1 | I->T R@5 | I->T R@10 | T->I R@1 | T->I R@5 | T->I R@10 | chance R@1 |",
                "|---|---|---|---|---|---|---|---|---|"]
        for n, m in retrieval.items():
            out.append(f"| {n} | {m['images']} | " + " | ".join(
                _pct(m, f"{d}_R@{k}") for d in ("image_to_text", "text_to_image") for k in (1, 5, 10))
                + f" | {_pct(m, 'chance_R@1')} |")
        for n, m in multilingual.items():
            languages = sorted({k.split(":")[0] for k in m if ":" in k} - {"mean"})
            rows = [("mean", f"{n}, mean of {m['languages']} languages")] + [(lang, f"{n} [{lang}]") for lang in languages]
            for lang, label in rows:
                out.append(f"| {label} | {m['images'] if lang == 'mean' else int(m.get(f'{lang}:images', 0))} | " + " | ".join(
                    _pct(m, f"{lang}:{d}_R@{k}") for d in ("image_to_text", "text_to_image") for k in (1, 5, 10))
                    + f" | {_pct(m, f'{lang}:chance_R@1')} |")
        out.append("")
    fewshot = {n: m for n, m in results.items() if kind_of(m) == "fewshot"}
    if fewshot:
        out += ["| few-shot linear probe, image tower features (top-1 %, mean ± std over seeds) | 1-shot | 5-shot "
                "| 10-shot | 25-shot | chance |", "|---|---|---|---|---|---|"]
        out += [f"| {n} | " + " | ".join(_pct(m, f"{k}shot_top1", f"{k}shot_top1_std") for k in (1, 5, 10, 25))
                + f" | {_pct(m, 'chance_top1')} |" for n, m in fewshot.items()]
        out.append("")
    for n, m in results.items():
        if kind_of(m) == "ood_loss":
            out += ["| contrastive loss (batch of %d) | training pairs (%s) | held-out pairs (%s) | chance log(batch) |"
                    % (m["batch_size"], m.get("train_pairs", "?"), m.get("heldout_pairs", "?")),
                    "|---|---|---|---|",
                    f"| {n} | {m['train_loss']:.3f} | {m['heldout_loss']:.3f} | {m['chance_loss']:.3f} |", ""]
    return "\n".join(out)
