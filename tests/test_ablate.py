"""`locktune ablate`: every shipped grid runs end to end in its smoke version, a killed grid resumes
without redoing finished arms, grid files are checked (a retired design-1 grid named as such), and reports
(including the committed RESULTS.md) say exactly what the arm records say."""

import json
import re
import statistics
from pathlib import Path

import pytest

from locktune.ablate.findings import judge
from locktune.ablate.grid import load_grid
from locktune.ablate.report import results_document, summary_columns, write_grid_report
from locktune.ablate.runner import RECORD, run_grid
from locktune.errors import LocktuneError
from locktune.packaged import configs_folder, find_config

REPO = Path(__file__).resolve().parents[1]
GRIDS = sorted(p for p in (configs_folder() / "studies").glob("*.yaml") if p.name != "base.yaml")


def is_validation(metrics: dict) -> bool:
    """The validation task's metrics: its own loss (`loss`, `loss_name`), or `contrastive_loss` in older records."""
    return "contrastive_loss" in metrics or ("loss" in metrics and "loss_name" in metrics)


def test_every_issue_grid_ships():
    """Round 3's grids cover the paper's findings, all nine tower settings among them, each arm with the 5
    paired seeds the verdict rule needs; the first design's grids are gone (docs/studies/design1.md)."""
    round3_grids = ("towers_r3", "towers_scratch", "text_locked", "text_towers", "image_towers", "head", "loss_batch",
                    "multilingual", "schedules")
    assert {p.stem for p in GRIDS} >= set(round3_grids)
    assert not (configs_folder() / "ablations").exists()
    round3 = [load_grid(f"studies/{name}.yaml") for name in round3_grids]
    settings = {a.overrides[0].split("=")[1] for g in round3 for a in g.arms
                if a.overrides and a.overrides[0].startswith("model.setting=")}
    assert settings >= {"LU", "Lu", "LL", "UU", "UL", "uL", "uu"}
    for grid in round3:
        assert grid.design == 2 and all(len(a.seeds) >= 5 for a in grid.arms), grid.name


# --- what a report must match: the records, read here without the package's own helpers -----------------

def _expected(records: list[dict], arm: str, key: str) -> list[float]:
    values = []
    for r in records:
        if r["arm"] != arm:
            continue
        ev = r["eval"]
        if key == "mean_zero_shot_top1":
            parts = [m["top1"] for m in ev.values() if "top1" in m and "mean_per_class_recall" in m]
        elif key in ("mean_zero_shot_recall", "near_ood_zero_shot_recall"):
            near = key.startswith("near_ood")
            parts = [m["mean_per_class_recall"] for t, m in ev.items()
                     if "mean_per_class_recall" in m and t.startswith("near_ood/") == near]
        elif key == "validation_loss":
            parts = [m.get("loss", m.get("contrastive_loss")) for m in ev.values() if is_validation(m)]
        elif key == "validation_R@1":
            parts = [(m["image_to_text_R@1"] + m["text_to_image_R@1"]) / 2 for m in ev.values() if is_validation(m)]
        elif key == "mean_retrieval_R@1":  # the retrieval benchmarks: not the validation split (it has a loss)
            parts = [m[k] for m in ev.values() if "image_to_text_R@1" in m and "languages" not in m
                     and not is_validation(m) for k in ("image_to_text_R@1", "text_to_image_R@1")]
        elif key == "mean_fewshot_10shot_top1":
            parts = [m["10shot_top1"] for t, m in ev.items() if t.startswith("fewshot/") and "10shot_top1" in m]
        elif key == "mean_probe_share":  # zero-shot top-1 over the probe's, recomputed from both accuracies
            parts = [m["zero_shot_top1"] / m["probe_top1"] for t, m in ev.items() if t.startswith("probe_share/")]
        elif key.startswith("multilingual_"):
            (m,) = [m for m in ev.values() if "languages" in m]
            langs = {k.split(":")[0] for k in m if ":" in k} - {"mean"}
            langs = [g for g in langs if (g == "en") == (key == "multilingual_en_R@1")]
            parts = [(m[f"{g}:image_to_text_R@1"] + m[f"{g}:text_to_image_R@1"]) / 2 for g in langs]
        else:
            task, _, name = key.partition("|")
            section = r["train"] if task == "train" else ev.get(task, {})
            parts = [section[name]] if section.get(name) is not None else []
        if parts:
            values.append(sum(parts) / len(parts))
    return values


def _format(values: list[float], key: str) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    if key == "train|seconds":
        return f"{mean:.0f}"
    if "loss" in key:
        return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def check_report_matches_records(text: str, records: list[dict]) -> int:
    """Every cell of every summary table in `text` equals the value computed from `records`; -> cells checked."""
    titles = {title: key for key, title in summary_columns()}
    checked = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("| arm | what | seeds |"):
            continue
        header = [c.strip() for c in line.strip("|").split("|")]
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip("|").split("|")]
            arm = cells[0]
            mine = [r for r in records if r["arm"] == arm]
            assert mine, f"report row {arm} has no record"
            assert cells[2] == str(len(mine))
            for title, value in zip(header[3:], cells[3:]):
                key = titles[title]
                expected = _expected(records, arm, key)
                assert value == (_format(expected, key) if expected else "-"), (arm, title)
                checked += 1
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("grid_path", [p for p in GRIDS if p.stem != "towers"], ids=lambda p: p.stem)
def test_smoke_version_of_every_grid(grid_path, tmp_path, monkeypatch):
    """Each shipped grid's first two arms, two steps each (studies/towers.yaml has its own test below)."""
    from locktune.eval.benchmarks import clean

    monkeypatch.setattr(clean, "training_signatures", _few_training_signatures)
    grid = load_grid(grid_path)
    run = run_grid(grid, tmp_path / grid.name, smoke=True, log=lambda line: None)
    assert [r["arm"] for r in run.records] == [a.name for a in grid.arms[:2]]
    for record in run.records:
        assert record["train"]["steps"] == 2 and len(record["train"]["curve"]) == 2
        assert record["eval"], "every arm is evaluated"
        on_disk = json.loads((tmp_path / grid.name / f"{record['arm']}-s{record['seed']}" / "arm.json").read_text())
        assert on_disk == record
        run_dir = tmp_path / grid.name / f"{record['arm']}-s{record['seed']}"
        assert (run_dir / "model" / "model.safetensors").is_file() and not (run_dir / "checkpoints").exists(), \
            "a finished arm keeps its model, not its training checkpoints"
    report = write_grid_report(grid, run.records, tmp_path / grid.name)
    text = report.read_text()
    assert check_report_matches_records(text, run.records) >= 4
    for name in grid.findings:
        assert judge(name, run.records).claim in text
    assert (tmp_path / grid.name / "plots" / f"{grid.name}_curves.png").stat().st_size > 1000
    assert "![" in text and all((tmp_path / grid.name / m).is_file() for m in re.findall(r"\]\(([^)]+\.png)\)", text))


@pytest.mark.slow
def test_killed_grid_resumes_without_redoing_finished_arms(tmp_path, monkeypatch):
    from locktune.eval.benchmarks import clean
    from locktune.train.trainer import train

    monkeypatch.setattr(clean, "training_signatures", _few_training_signatures)
    grid = load_grid("studies/towers_r3.yaml")
    quiet = dict(log=lambda line: None)
    first = run_grid(grid, tmp_path / "a" / "towers", only_arms=["LU"], smoke=True, **quiet)
    assert first.trained == ["LU-s0"]
    # A kill in the middle of the next arm: it trained one of its two steps and checkpointed.
    from locktune.ablate.runner import SMOKE
    arm = grid.arm("Lu")
    config = grid.run_config(arm, 0, tmp_path / "a" / "towers" / "Lu-s0", [*SMOKE, *grid.smoke])
    (tmp_path / "a" / "towers" / "Lu-s0").mkdir(parents=True)
    (tmp_path / "a" / "towers" / "Lu-s0" / "config.yaml").write_text(__import__("yaml").safe_dump(config.to_dict()))
    train(config, stop_after=1)
    resumed = run_grid(grid, tmp_path / "a" / "towers", only_arms=["LU", "Lu"], smoke=True, **quiet)
    assert resumed.reused == ["LU-s0"] and resumed.trained == ["Lu-s0"]
    assert resumed.records[0] == first.records[0]
    # The resumed arm equals one that was never interrupted.
    straight = run_grid(grid, tmp_path / "b" / "towers", only_arms=["Lu"], smoke=True, **quiet)
    assert resumed.records[1]["train"]["curve"] == straight.records[0]["train"]["curve"]
    import torch
    from safetensors.torch import load_file

    weights = [load_file(str(d / "Lu-s0" / "model" / "model.safetensors"))
               for d in (tmp_path / "a" / "towers", tmp_path / "b" / "towers")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # A folder is never resumed under another config.
    with pytest.raises(LocktuneError, match="another config"):
        run_grid(grid, tmp_path / "a" / "towers", only_arms=["LU"], smoke=True, extra=["train.lr=0.5"], **quiet)


def test_grid_file_errors_name_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("name: g\nbase: studies/base.yaml\narms:\n  - {name: a, overrides: [train.stepz=3]}\n")
    with pytest.raises(LocktuneError, match=r"arm 'a'.*did you mean 'train.steps'"):
        load_grid(bad)
    bad.write_text("name: g\nbase: studies/base.yaml\nams: []\n")
    with pytest.raises(LocktuneError, match="unknown keys.*ams"):
        load_grid(bad)
    bad.write_text("name: g\nbase: nowhere.yaml\narms: [{name: a}]\n")
    with pytest.raises(LocktuneError, match="nowhere.yaml"):
        load_grid(bad)
    bad.write_text("name: g\nbase: studies/base.yaml\nfindings: [lu_wins]\narms: [{name: a}]\n")
    with pytest.raises(LocktuneError, match="unknown finding 'lu_wins'"):
        load_grid(bad)
    bad.write_text("name: g\nbase: studies/base.yaml\ndesign: 1\narms: [{name: a}]\n")
    with pytest.raises(LocktuneError, match=r"design should be 2.*retired.*design1.md"):
        load_grid(bad)
    with pytest.raises(LocktuneError, match=r"'ablations/towers.yaml'.*retired.*design1.md.*studies/towers_r3.yaml"):
        load_grid("ablations/towers.yaml")  # a design-1 name, as older docs and scripts give it


def test_committed_results_document_is_what_the_records_say():
    """RESULTS.md is generated: rewriting it from the committed records gives the same text, and every
    table cell matches an independent computation from the JSON files."""
    from locktune.ablate.records import read_records

    text = (REPO / "RESULTS.md").read_text()
    command = re.search(r"Produced by: `([^`]*)`", text).group(1)
    grid_paths = [find_config(word, "grid file") for word in command.split() if word.endswith(".yaml")]  # in the command's order
    assert all(p.parent.name == "studies" for p in grid_paths), "RESULTS.md judges design-2 grids only"
    studied = {load_grid(p).name for p in (configs_folder() / "studies").glob("*.yaml") if p.name != "base.yaml"}
    recorded = {name for name in studied if (REPO / "results" / name).is_dir()}
    assert recorded <= {load_grid(p).name for p in grid_paths}, "every study with records is in RESULTS.md"
    sections = []
    for grid_path in grid_paths:
        grid = load_grid(grid_path)
        folder = REPO / "results" / grid.name
        sections.append((grid, read_records(folder) if folder.is_dir() else []))
    assert results_document(sections, REPO, command, plots=False) == text
    records = [r for _, rs in sections for r in rs]
    assert records, "RESULTS.md should come with its records in results/"
    def section(title: str) -> str:  # the whole heading line: one grid's title can begin another's
        parts = text.split(f"\n## {title}\n")
        assert len(parts) == 2, f"RESULTS.md has {len(parts) - 1} sections titled {title!r}"
        return parts[1].split("\n## ")[0]

    checked = sum(check_report_matches_records(section(g.title), rs) for g, rs in sections if rs)
    assert checked >= 50


@pytest.mark.slow
def test_identical_runs_are_reused_across_grids_but_not_across_process_counts(tmp_path, monkeypatch):
    from locktune.ablate.runner import find_identical_run
    from locktune.eval.benchmarks import clean

    monkeypatch.setattr(clean, "training_signatures", _few_training_signatures)
    towers = load_grid("studies/towers_r3.yaml")
    run_grid(towers, tmp_path / "towers-r3", only_arms=["LU"], seeds=[0], smoke=True, log=lambda line: None)
    head = load_grid("studies/head.yaml")  # linear-head is LU
    run = run_grid(head, tmp_path / "head-r3", only_arms=["linear-head"], seeds=[0], smoke=True, log=lambda line: None)
    assert run.reused == ["linear-head-s0"] and run.records[0]["reused_from"] == "towers-r3/LU-s0"
    loss = load_grid("studies/loss_batch.yaml")  # global-2proc: the same config, 2 processes
    config = loss.run_config(loss.arm("global-2proc"), 0, tmp_path / "loss-batch" / "x", list(__import__(
        "locktune.ablate.runner", fromlist=["SMOKE"]).SMOKE))
    original = tmp_path / "towers-r3" / "LU-s0" / RECORD
    # Decoys sorted before it, each a copy of its record with one thing changed: another config (a key more),
    # another evaluation size, another suite, or itself reused (which never counts as having trained).
    record = json.loads(original.read_text())
    decoys = {"a-config": {**record, "config": {**record["config"], "note": "another"}},
              "b-eval": {**record, "eval_max_images": 41}, "c-suite": {**record, "suite": "offline"},
              "d-reused": {**record, "reused_from": "towers-r3/LU-s0"},
              "e-lists-v1": {k: v for k, v in record.items() if k != "clean_lists"}}  # scored on drop lists 1
    for name, decoy in decoys.items():
        (tmp_path / "a-decoys" / name).mkdir(parents=True)
        (tmp_path / "a-decoys" / name / RECORD).write_text(json.dumps(decoy))
    assert find_identical_run(tmp_path, config, "towers", 40, processes=1) == original
    assert find_identical_run(tmp_path, config, "towers", 40, processes=2) is None
    assert find_identical_run(tmp_path, config, "towers", 41, processes=1) == tmp_path / "a-decoys/b-eval" / RECORD


def _few_training_signatures(sources=("openclipart", "emoji")):
    """The `_clean` benchmarks' training signatures from the first 100 images of each source: hashing all
    10,000 training images is most of a minute, and test_near_duplicates covers the matching itself."""
    import numpy as np
    from locktune.data.images import SubsetImages
    from locktune.data.near_duplicates import signatures
    from locktune.data.pairs import load_pairs

    parts = [signatures(SubsetImages(load_pairs([s]).images, range(100))) for s in sources]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.mark.slow
def test_smoke_version_of_the_design_2_tower_study(tmp_path, monkeypatch):
    """studies/towers.yaml end to end on the smoke settings: design-2 records with per-image zero-shot
    outcomes, the run's validation split evaluated, the training split and batch-norm recalibration
    recorded, findings judged by the verdict rule (one seed: not enough seeds), and the report."""
    from locktune.ablate.findings import MISSING, NOT_ENOUGH_SEEDS, judge_findings
    from locktune.ablate.records import per_image
    from locktune.eval.benchmarks import clean

    monkeypatch.setattr(clean, "training_signatures", _few_training_signatures)

    grid = load_grid("studies/towers.yaml")
    run = run_grid(grid, tmp_path / grid.name, smoke=True, log=lambda line: None)
    assert [r["arm"] for r in run.records] == ["LU", "UU"]
    for record in run.records:
        assert record["design"] == 2
        correct, labels = per_image(record, "fashion_mnist")
        assert len(correct) == len(labels) == record["eval"]["fashion_mnist"]["images"]
        assert record["eval"]["validation"]["pairs"] > 0
        assert record["train"]["run"]["held_out_pairs"] > 0
        lists = record["clean_lists"]  # which images each _clean benchmark left out, of which benchmark version
        assert lists["version"] == clean.LISTS_VERSION == 2 and "tuxpaint_categories" in lists["benchmarks"]
        assert lists["benchmarks"]["tuxpaint_categories"] == clean.drop_record("tuxpaint_categories")
    uu = next(r for r in run.records if r["arm"] == "UU")
    assert uu["train"]["run"]["bn_recalibration_images"] > 0  # a trained image tower with batch norm
    verdicts = judge_findings(grid.findings, run.records)
    assert verdicts["lu_beats_uu"].verdict == NOT_ENOUGH_SEEDS  # one seed: no verdict under the rule
    assert {v.verdict for v in verdicts.values()} <= {NOT_ENOUGH_SEEDS, MISSING}
    text = write_grid_report(grid, run.records, tmp_path / grid.name).read_text()
    assert "zero-shot mean per-class recall (mean)" in text and "not enough seeds" in text


@pytest.mark.slow  # rewrites a grid's report from its records: 23 s
def test_report_only_keeps_the_committed_records_of_a_grid_not_under_out(tmp_path, monkeypatch):
    """`--report-only --results`: a grid with records under --out is reported from them; one without keeps
    the records committed beside the findings document, so RESULTS.md is rewritten by one command."""
    import shutil
    import sys

    from locktune.cli import main

    committed = tmp_path / "results" / "towers-v2"
    shutil.copytree(REPO / "results" / "towers-v2", committed)
    before = {p.name: p.read_text() for p in committed.glob("*.json")}
    out = tmp_path / "runs"
    shutil.copytree(REPO / "results" / "equal-compute", out / "equal-compute")
    argv = ["ablate", "--report-only", "--out", str(out), "--results", str(tmp_path / "RESULTS.md"),
            "studies/towers.yaml", "studies/equal_compute.yaml"]
    monkeypatch.setattr(sys, "argv", ["locktune", *argv])
    assert main(argv) == 0
    assert {p.name: p.read_text() for p in committed.glob("*.json")} == before  # kept as they were
    assert len(list((tmp_path / "results" / "equal-compute").glob("*.json"))) == 9  # copied from --out
    assert (out / "equal-compute" / "report.md").is_file() and not (out / "towers-v2").exists()
    text = (tmp_path / "RESULTS.md").read_text()
    assert "LU beats UU" in text and "equal compute" in text.lower()
