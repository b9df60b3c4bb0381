"""Readings as templates (`locktune.ablate.readings`): every placeholder kind filled in from hand-made records
and checked against values computed here (numpy, scipy), the sign of a comparison named in the other order,
one-line errors naming the grid file for an unknown kind, arm, finding or metric, the lint that refuses a
number typed by hand, and every committed grid file's readings: templates only, filled from the committed
records into RESULTS.md."""

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import optimize, stats

from locktune.ablate.grid import Arm, Grid
from locktune.ablate.readings import check, resolve, typed_numbers
from locktune.errors import LocktuneError
from locktune.packaged import configs_folder

REPO = Path(__file__).resolve().parents[1]
# Per seed: mean zero-shot recall (two benchmarks with these recalls) and the eval-mode training-pair loss.
RECALL = {"LU": [0.30, 0.34, 0.29, 0.36], "UU": [0.27, 0.28, 0.30, 0.31]}
TRAIN_LOSS = {"LU": [1.04, 1.05, 1.03, 1.06], "UU": [1.20, 1.18, 1.19, 1.17]}
STEPS, BATCH, PAIRS = {"LU": 264, "UU": 90}, 32, 1000


def _records() -> list[dict]:
    out = []
    for order, arm in enumerate(RECALL):
        for seed, (recall, loss) in enumerate(zip(RECALL[arm], TRAIN_LOSS[arm])):
            bench = lambda r: {"kind": "classification", "top1": r, "mean_per_class_recall": r,  # noqa: E731
                               "chance_top1": 0.1, "images": 100}
            out.append({
                "grid": "g", "arm": arm, "seed": seed, "order": 1000 * order + seed, "design": 2, "label": arm,
                "eval": {"bench_a": bench(recall - 0.01), "bench_b": bench(recall + 0.01),
                         "ood_loss": {"kind": "ood_loss", "train_loss": loss, "heldout_loss": loss + 2.5}},
                "train": {"steps": STEPS[arm], "final_loss": loss - 0.2 + 0.01 * seed, "seconds": 10.0, "curve": [],
                          "run": {"training_pairs": PAIRS}},
                "config": {"train": {"batch_size": BATCH, "lr": 2e-4}, "model": {"logit_bias_init": -10.0}},
                "calibration": {"budget_s": 150.0, "steps": STEPS[arm]}, "eval_seconds": 1.0})
    return out


def _grid(reading: str, arms=("LU", "UU")) -> Grid:
    return Grid(name="g", title="g", base=Path("base.yaml"), overrides=[], suite="towers",
                arms=[Arm(a, (), (0, 1, 2, 3)) for a in arms], findings=["lu_beats_uu"],
                path=Path("/grids/g.yaml"), design=2, reading={"lu_beats_uu": reading})


def _fill(reading: str, arms=("LU", "UU")) -> str:
    return resolve(_grid(reading, arms), "lu_beats_uu", _records())


def test_placeholders_resolve_to_values_computed_here():
    d = np.array(RECALL["LU"], dtype=np.float64) - np.array(RECALL["UU"], dtype=np.float64)
    n, sd = len(d), d.std(ddof=1)
    p = stats.ttest_rel(RECALL["LU"], RECALL["UU"]).pvalue
    # The verdict rule's MDE: one-sided paired t at 0.05 / 1 (a family of one finding), 80% power, solved on
    # the noncentral t here by scipy's own root finder.
    def mde_at(seeds):
        crit = stats.t.ppf(0.95, seeds - 1)
        return optimize.brentq(lambda e: stats.nct.sf(crit, seeds - 1, e * math.sqrt(seeds) / sd) - 0.8, 1e-9, 10 * sd)
    mde, mde9 = mde_at(n), mde_at(9)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    text = ("{effect:lu_beats_uu}|{seed_differences:lu_beats_uu}|{p:lu_beats_uu}|{p:lu_beats_uu:.2}|"
            "{mde:lu_beats_uu}|{mde_at:lu_beats_uu:9}|{ahead:lu_beats_uu}|{seeds:lu_beats_uu}|{verdict:lu_beats_uu}|"
            "{margin:lu_beats_uu:.0}|{seed_interval:lu_beats_uu}|{metric:LU:mean_zero_shot_recall}|{metric:UU:ood_loss|train_loss}|"
            "{metric:LU:train|final_loss:.2}|{range:UU:ood_loss|train_loss:.2}|{seeds:UU}|{steps:LU}|"
            "{pairs:LU}|{pairs_seen:LU}|{passes:UU}|{budget:LU}|{config:LU:train.lr}|{config:UU:model.logit_bias_init}")
    expected = [f"{100 * d.mean():+.1f}", ", ".join(f"{100 * x:+.1f}" for x in d), f"{p:.3f}", f"{p:.2f}",
                f"{100 * mde:.1f}", f"{100 * mde9:.1f}", f"{int((d > 0).sum())} of {n}", str(n), "not enough seeds",
                "2", f"[{100 * (d.mean() - half):+.1f}, {100 * (d.mean() + half):+.1f}]", f"{100 * np.mean(RECALL['LU']):.1f}", f"{np.mean(TRAIN_LOSS['UU']):.3f}",
                f"{np.mean(TRAIN_LOSS['LU']) - 0.2 + 0.015:.2f}", "1.17-1.20", "4", "264", "1,000", "8,448",
                f"{90 * 32 / 1000:.1f}", "150", "0.0002", "-10"]
    assert _fill(text).split("|") == expected


def test_a_comparison_named_the_other_way_round_flips_its_sign():
    d = np.array(RECALL["LU"]) - np.array(RECALL["UU"])
    filled = _fill("{effect:UU vs LU:mean_zero_shot_recall} / {seed_differences:UU vs LU:mean_zero_shot_recall} / "
                   "{ahead:UU vs LU:mean_zero_shot_recall} / {effect:LU vs UU:ood_loss|train_loss}")
    loss_lead = np.mean(TRAIN_LOSS["UU"]) - np.mean(TRAIN_LOSS["LU"])  # a loss: LU's lower loss is LU's lead
    assert filled == (f"{-100 * d.mean():+.1f} / " + ", ".join(f"{-100 * x:+.1f}" for x in d)
                      + f" / {int((d < 0).sum())} of 4 / {loss_lead:+.3f}")


def test_a_finding_with_two_comparisons_of_the_same_arms_is_picked_by_place():
    """uu_overfits_training_distribution compares UU with LU twice (training loss, then LU with UU on the loss gap):
    `:N` picks the N-th, and arms named in a comparison's own order pick that comparison before a flipped one."""
    train_lead = np.mean(TRAIN_LOSS["LU"]) - np.mean(TRAIN_LOSS["UU"])  # UU - LU on a loss: UU's lead, negative here
    gap = {arm: [(loss + 2.5) - loss for loss in TRAIN_LOSS[arm]] for arm in TRAIN_LOSS}  # held-out - training
    gap_lead = np.mean(np.array(gap["UU"]) - np.array(gap["LU"]))  # LU - UU on a loss: LU's smaller gap leads
    name = "uu_overfits_training_distribution"
    grid = dataclasses.replace(_grid(""), findings=["lu_beats_uu", name], reading={
        "lu_beats_uu": f"{{effect:{name}:1}}|{{effect:{name}:2}}|{{effect:{name}:UU vs LU}}|{{effect:{name}:LU vs UU}}",
        name: f"{{effect:{name}:3}}"})
    filled = resolve(grid, "lu_beats_uu", _records())
    assert filled.split("|") == [f"{train_lead:+.3f}", f"{gap_lead:+.3f}", f"{train_lead:+.3f}", f"{gap_lead:+.3f}"]
    with pytest.raises(LocktuneError, match=f"finding '{name}' has 2 comparisons, not 3"):
        resolve(grid, name, _records())


def test_a_number_typed_by_hand_is_refused():
    with pytest.raises(LocktuneError, match=r"^grid file '/grids/g.yaml', reading 'lu_beats_uu': numbers typed by "
                                            r"hand \(3.1\)") as error:
        _fill("LU ahead by 3.1 pt ({effect:lu_beats_uu} pt)")  # 3.1 disagrees with the records' +2.2
    assert "\n" not in str(error.value)
    # Design words only: the digits of an arm's name (batch 16 of softmax-16) and metric names.
    assert typed_numbers(_grid("", ("LU", "UU", "softmax-16")), "at batch 16, R@1 of LU; softmax-16 (5 seeds)") == ["5"]


@pytest.mark.parametrize("placeholder, says", [
    ("{nonsense:LU}", "unknown kind 'nonsense'"),
    ("{metric:LX:mean_zero_shot_recall}", "arm 'LX' has no record"),
    ("{metric:LU:no_such_metric}", "arm 'LU' has no metric 'no_such_metric'"),
    ("{effect:no_such_finding}", "'no_such_finding' is neither a finding nor 'A vs B:KEY'"),
    ("{effect:lu_beats_uu:LU vs LL}", "finding 'lu_beats_uu' has no comparison of LU and LL"),
    ("{config:LU:train.nope}", "no config value 'train.nope'"),
    ("{budget}", "'budget' needs arguments"),
])
def test_an_unfillable_placeholder_is_one_line_naming_the_grid_file(placeholder, says):
    with pytest.raises(LocktuneError) as error:
        _fill(f"Read as {placeholder}.", arms=("LU", "UU", "LX"))  # LX: in the grid, without records
    message = str(error.value)
    assert message.startswith("grid file '/grids/g.yaml', reading 'lu_beats_uu': " + placeholder)
    assert says in message and "\n" not in message


def _grid_files() -> list[Path]:
    return sorted(p for p in (configs_folder() / "studies").glob("*.yaml")
                  if p.name != "base.yaml")


def test_every_committed_reading_is_a_template():
    """No reading in any grid file types a measured number (that they fill from the committed records, and that
    RESULTS.md is what they fill to, is test_ablate's test_committed_results_document_is_what_the_records_say).
    Read from the YAML directly: loading a grid checks every arm's config, seconds per grid."""
    readings = 0
    for path in _grid_files():
        data = yaml.safe_load(path.read_text())
        arms = [Arm(str(entry["name"]), (), (0,)) for entry in data["arms"]]
        grid = Grid(name=data["name"], title="", base=path, overrides=[], suite="", arms=arms, path=path,
                    findings=data.get("findings") or [], reading=data.get("reading") or {})
        for finding, text in grid.reading.items():
            assert typed_numbers(grid, text) == [], f"{path.name}: {finding}"
            check(grid, finding)  # known kinds, the grid's own arms and findings
            assert "{" in text, f"{path.name}: {finding} quotes nothing from the records"
            readings += 1
    assert readings >= 10


def test_results_document_quotes_the_records_numbers():
    """RESULTS.md's equal-compute reading carries the per-seed differences as computed here from the JSON."""
    import json

    rows = [json.loads(p.read_text()) for p in sorted((REPO / "results" / "equal-compute").glob("*.json"))]
    by = {(r["arm"], r["seed"]): r for r in rows if "arm" in r}

    def recall(record):  # mean per-class recall over the zero-shot benchmarks but near_ood/
        values = [m["mean_per_class_recall"] for t, m in record["eval"].items()
                  if m.get("kind") == "classification" and "mean_per_class_recall" in m
                  and not t.startswith("near_ood/")]
        return sum(values) / len(values)

    diffs = [recall(by["LU-budget", s]) - recall(by["UU-budget", s]) for s in (0, 1, 2)]
    lines = (REPO / "RESULTS.md").read_text().splitlines()
    line = next(x for x in lines if x.startswith("- `equal_compute_lu_beats_uu`"))
    assert "(" + ", ".join(f"{100 * x:+.1f}" for x in diffs) + " pt)" in line
    assert re.search(rf"bought LU {by['LU-budget', 0]['train']['steps']} steps and UU "
                     rf"{by['UU-budget', 0]['train']['steps']};", line)


@pytest.mark.parametrize("reading, says", [
    ("LU led by 5.4 pt.", "numbers typed by hand (5.4)"),
    ("LU led by {effect:lu_beats_uu} pt.", "finding 'lu_beats_uu' is not in the grid's findings"),
    ("LU took {steps:LU-hours} steps.", "no arm 'LU-hours' in the grid"),
    ("LU led by {efect:equal_compute_lu_beats_uu} pt.", "unknown kind 'efect'"),
])
def test_a_bad_reading_fails_when_the_grid_loads_before_any_training(tmp_path, reading, says):
    from locktune.ablate.grid import load_grid

    source = configs_folder() / "studies" / "equal_compute.yaml"
    text = source.read_text().replace("base: base.yaml", f"base: {source.parent / 'base.yaml'}")
    data = yaml.safe_load(text)
    data["reading"] = {"equal_compute_lu_beats_uu": reading}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(LocktuneError) as error:
        load_grid(bad)
    assert str(error.value).startswith(f"grid file '{bad}', reading 'equal_compute_lu_beats_uu': ")
    assert says in str(error.value) and "\n" not in str(error.value)


def test_records_that_cannot_fill_a_reading_show_why_in_the_report(tmp_path):
    """A smoke run or a grid still running has no record for an arm the reading quotes: the report says so in
    the reading's place instead of failing (the committed RESULTS.md never carries such a line)."""
    from locktune.ablate.report import findings_table

    grid = _grid("UU fit worse ({metric:LX:ood_loss|train_loss} nats).", arms=("LU", "UU", "LX"))
    text = "\n".join(findings_table(grid, _records()))
    assert ("- `lu_beats_uu`: _(written for the full grid's records; these cannot fill it: "
            "{metric:LX:ood_loss|train_loss}: arm 'LX' has no record") in text
    assert "cannot fill it" not in (REPO / "RESULTS.md").read_text()
