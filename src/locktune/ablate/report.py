"""Reports from arm records only: a markdown page per grid (results table with seed spread, the paper's
findings with verdicts, plots and training curves), and the findings document (RESULTS.md) across grids.
Every number printed is read from the records through `records.metric`; nothing comes from a model."""

from __future__ import annotations

import shutil
from pathlib import Path

from locktune.ablate.claims import claims_table
from locktune.ablate.findings import judge_findings, judged_outcomes
from locktune.ablate.grid import Grid
from locktune.ablate.plots import plot_curves, plot_metric_bars
from locktune.ablate.records import arms_in_order, metric, summarize, write_record
from locktune.config import load_config

TRAIN_COLUMNS = [("train|final_loss", "final training loss"), ("train|seconds", "training s")]


def summary_columns() -> list[tuple[str, str]]:
    """(record key, column title): each evaluator's registered summary values (those that are columns), then
    the training columns; percentages unless a loss or seconds."""
    from locktune.eval.evaluation import reporters

    return [(s.key, s.title) for r in reporters() for s in r.summaries if s.column] + TRAIN_COLUMNS


BAR_PLOTS = [  # (record key, title, file-name part): one bar plot per key a grid's records have
    ("mean_zero_shot_recall", "mean zero-shot per-class recall", "zero_shot_recall"),
    ("mean_zero_shot_top1", "mean zero-shot top-1", "zero_shot"),
    ("multilingual_en_R@1", "English retrieval R@1", "english_r1"),
    ("multilingual_other_R@1", "other languages retrieval R@1", "other_languages_r1"),
]


def cell(records: list[dict], arm: str, key: str) -> str:
    summary = summarize(records, arm, key)
    if summary is None:
        return "-"
    if key == "train|seconds":
        return f"{summary.mean:.0f}"
    if "loss" in key:
        return f"{summary.mean:.3f}" + (f" ± {summary.std:.3f}" if summary.seeds > 1 else "")
    return f"{100 * summary.mean:.1f}" + (f" ± {100 * summary.std:.1f}" if summary.seeds > 1 else "")


def _present(records: list[dict], key: str) -> bool:
    return any(metric(r, key) is not None for r in records)


def summary_table(records: list[dict]) -> list[str]:
    columns = [(k, t) for k, t in summary_columns() if _present(records, k)]
    lines = ["| arm | what | seeds | " + " | ".join(t for _, t in columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for arm in arms_in_order(records):
        mine = [r for r in records if r["arm"] == arm]
        lines.append(f"| {arm} | {mine[0].get('label', '')} | {len(mine)} | "
                     + " | ".join(cell(records, arm, k) for k, _ in columns) + " |")
    return lines


def task_table(records: list[dict]) -> list[str]:
    """Every task's headline metrics per arm (the summary's parts), as each kind registers them."""
    from locktune.eval.evaluation import REPORTERS, kind_of

    first = records[0]["eval"]
    keys, chance = [], []
    for task, metrics in first.items():
        reporter = REPORTERS.get(kind_of(metrics))
        for name in reporter.task_columns:
            if name in metrics:
                keys.append(f"{task}|{name}")
                value = metrics.get(reporter.chance)
                chance.append(f"{100 * value:.1f}" if isinstance(value, (int, float)) else "-")
    lines = ["| arm | " + " | ".join(k.replace("|", " ") for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for arm in arms_in_order(records):
        lines.append(f"| {arm} | " + " | ".join(cell(records, arm, k) for k in keys) + " |")
    lines.append("| chance | " + " | ".join(chance) + " |")
    return lines


def _cell_text(text: str) -> str:
    """A markdown table cell: a '|' inside (a task|metric key) would split the cell."""
    return text.replace("|", "\\|")


def findings_table(grid: Grid, records: list[dict]) -> list[str]:
    """The paper's findings over the grid's records: what was compared, the measured effect with its
    seed-level, hierarchical and per-image intervals, the one-sided tests, the Holm-adjusted p over the grid's
    family, the MDE, and the verdict (`findings.py`, `verdict.py`); then the grid's reading, if any."""
    verdicts = judge_findings(grid.findings, records)
    lines = [family_line(grid, records), "",
             "| finding (paper) | tested here | measured here (effect a - b; 95% seed interval, hierarchical and "
             "per-image intervals; one-sided t and sign-flip p, Holm-adjusted p over the family; minimum "
             "detectable effect) | verdict |", "|---|---|---|---|"]
    for name in grid.findings:
        v = verdicts[name]
        cells = [_cell_text(text) for text in (v.claim, v.tested or "-", v.measured)]
        lines.append("| " + " | ".join(cells) + f" | **{v.verdict}** |")
    if grid.reading:
        lines += ["", "Reading (written after the run; every number in it filled in from the records above):", ""]
        lines += [f"- `{name}`: {_reading(grid, name, records)}" for name in grid.findings if name in grid.reading]
    return lines


def family_line(grid: Grid, records: list[dict]) -> str:
    """The registered family the grid's verdicts are adjusted over, and the seeds it needs."""
    from locktune.ablate.verdict import ALPHA, CORRECTION, MIN_SEEDS, seeds_needed

    outcomes = judged_outcomes(grid.findings, records, images=False)
    size = sum(1 if not isinstance(o, list) else len(o) for o in outcomes.values())
    seeds = sorted({len(o.differences or {}) for found in outcomes.values() if isinstance(found, list) for o in found})
    return (f"Verdict rule (docs/studies/index.md): the {len(grid.findings)} findings' {size} comparisons are one "
            f"family, {CORRECTION.title()}-adjusted at {ALPHA}; each needs at least {MIN_SEEDS} paired seeds, and any "
            f"can hold only with {seeds_needed(size)} or more (the exact sign-flip p is at least 2^-seeds); these "
            f"records pair {', '.join(map(str, seeds)) or 'no'} seeds per comparison.")


def _reading(grid: Grid, finding: str, records: list[dict]) -> str:
    """The reading filled in from the records; where they cannot fill it (a smoke run, a grid still running),
    why, in its place."""
    from locktune.ablate.readings import Unfilled, resolve

    try:
        return resolve(grid, finding, records)
    except Unfilled as unfilled:
        return f"_(written for the full grid's records; these cannot fill it: {unfilled.reason})_"


def setup_line(grid: Grid) -> str:
    """The grid's base run (its base file and the grid's own overrides, before any arm's)."""
    c = load_config(grid.base, grid.overrides, file_size_for_every_tower=True).to_dict()
    m, d, t = c["model"], c["data"], c["train"]
    data = "+".join(d["sources"]) + (f" (at most {d['max_pairs_per_source']} pairs per source)"
                                     if d["max_pairs_per_source"] else " (all pairs)")
    if d.get("validation_fraction"):
        data += f", {100 * d['validation_fraction']:g}% of them held out for validation"
    if d.get("max_train_pairs"):
        data += f", training on {d['max_train_pairs']} of the rest"
    return (f"Base: {m['image_tower']} at {m['image_size']} px, {m['text_tower']} text tower, data {data}, "
            f"{t['steps']} steps of {t['batch_size']} pairs, lr {t['lr']:g} (heads x{t['head_lr_multiplier']:g}), "
            f"seeds per arm as listed; each arm changes only what its overrides say.")


def grid_section(grid: Grid, records: list[dict], plot_dir: Path, link_base: Path, level: str = "##",
                 plots: bool = True) -> list[str]:
    """The grid's markdown; `plots=False` links the plots without drawing them (to compare text only)."""
    if not records:
        return [f"{level} {grid.title}", "", "No arm has finished yet.", ""]
    bars = {key: (title, plot_dir / f"{grid.name}_{slug}.png") for key, title, slug in BAR_PLOTS
            if _present(records, key)}
    curves = plot_dir / f"{grid.name}_curves.png"
    if plots:
        for key, (title, path) in bars.items():
            plot_metric_bars(records, key, title, path)
        plot_curves(records, curves)
    rel = lambda p: p.resolve().relative_to(link_base.resolve()).as_posix()  # noqa: E731
    overrides = {a.name: " ".join(a.overrides) for a in grid.arms}
    lines = [f"{level} {grid.title}", "", grid.description, "", setup_line(grid), ""]
    reused = [r for r in records if r.get("reused_from")]
    if grid.findings:
        lines += findings_table(grid, records) + [""]
    lines += summary_table(records) + ["", "Per task (top-1 / R@1 %, mean ± sample std over seeds):", ""]
    lines += task_table(records) + [""]
    lines += ["Arms: " + "; ".join(f"`{a}`: `{overrides.get(a, '')}`" + _budget_text(records, a)
                                  for a in arms_in_order(records)), ""]
    if reused:
        lines += ["Runs whose config and evaluation equal another grid's run reuse its record (not retrained): "
                  + ", ".join(f"{r['arm']}-s{r['seed']} = {r['reused_from']}" for r in reused) + ".", ""]
    lines += [f"![{grid.name}: {title}]({rel(path)})" for title, path in bars.values()]
    lines += [f"![{grid.name}: training curves]({rel(curves)})", ""]
    return lines


def _budget_text(records: list[dict], arm: str) -> str:
    """For an arm trained on a wall-clock budget: the budget and the steps its calibration gave."""
    calibration = next((r["calibration"] for r in records if r["arm"] == arm and r.get("calibration")), None)
    if not calibration:
        return ""
    return (f" ({calibration['budget_s']:g} s budget: {calibration['steps']} steps at "
            f"{calibration['seconds_per_step']:.2f} s/step, timed once)")


def write_grid_report(grid: Grid, records: list[dict], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.md"
    lines = grid_section(grid, records, out_dir / "plots", out_dir, level="#")
    lines.append(f"Records: `{out_dir}/*/arm.json` ({len(records)} runs).")
    path.write_text("\n".join(lines) + "\n")
    return path


RULE_HEADING = [
    "Every grid below is of design 2 (`configs/studies/`, docs/studies/towers-v2.md): paired seeds, the paper's "
    "regime, mean per-class recall, judged by the pre-registered verdict rule (docs/studies/index.md): a grid's "
    "findings are one family; at least 5 paired seeds; the one-sided paired t and exact sign-flip tests must both "
    "reject after Holm's adjustment; the seed-level 95% interval first, hierarchical and per-image intervals beside "
    "it; the noncentral-t minimum detectable effect. Verdicts: holds / does not hold / not enough power / not enough "
    "seeds. The first design's ablations (unpaired seeds, an earlier rule) were retired in round 3; their table is "
    "archived in docs/studies/design1.md.", ""]


def results_document(sections: list[tuple[Grid, list[dict]]], base: Path, command: str | None,
                     plots: bool = True) -> str:
    """The findings document's text: a verdict overview, then each grid's section."""
    lines = ["# locktune: the LiT paper's findings, measured on the built-in offline data", "",
             "Generated by `locktune ablate` from the arm records in `results/` (do not edit by hand; "
             "`make results` trains every grid and rewrites it; `make report` rewrites it from the records, "
             "taking a grid's records from `--out` where a run left them there, else from `results/`). Small scale: a 2-core CPU, "
             "~10k image-text pairs, minutes per arm; a verdict here says what these runs show, not what "
             "happens at the paper's scale.", ""]
    if command:
        lines += [f"Produced by: `{command}`", ""]
    lines += RULE_HEADING + ["| grid | finding (paper) | verdict here |", "|---|---|---|"]
    current: dict[str, dict[str, str]] = {}  # grid -> finding -> verdict, grids with records only
    for grid, records in sections:
        verdicts = judge_findings(grid.findings, records) if records else {}
        if records:
            current[grid.name] = {name: v.verdict for name, v in verdicts.items()}
        for name in grid.findings:
            v = verdicts.get(name)
            lines.append(f"| {grid.name} | {v.claim if v else name} | {v.verdict if v else 'not run'} |")
    lines.append("")
    lines += claims_table(current)
    for grid, records in sections:
        own = [r for r in records if not r.get("reused_from")]
        seconds = sum(r["train"]["seconds"] + r["eval_seconds"] for r in own)
        lines += grid_section(grid, records, base / "results" / "plots", base, plots=plots)
        if own:
            lines += [f"Grid time: {seconds / 60:.1f} min of training and evaluation over the {len(own)} runs "
                      "it trained (sum of the runs' own timings).", ""]
    return "\n".join(lines) + "\n"


def committed_folder(document: Path, grid_name: str) -> Path:
    """Where the findings document at `document` keeps a grid's records: results/GRID beside it."""
    return Path(document).parent / "results" / grid_name


def write_results_document(runs, path: Path, command: str | None = None) -> Path:
    """RESULTS.md at `path`, its plots in `results/plots/` and every record in `results/GRID/` beside it."""
    base = path.parent
    sections = []
    for run in runs:
        folder = committed_folder(path, run.grid.name)
        if folder.exists() and run.records:
            shutil.rmtree(folder)
        for record in run.records:
            write_record(record, folder / f"{record['arm']}-s{record['seed']}.json")
        from locktune.ablate.records import read_records

        sections.append((run.grid, read_records(folder) if folder.exists() else []))
    path.write_text(results_document(sections, base, command))
    return path
