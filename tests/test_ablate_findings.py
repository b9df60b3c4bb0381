"""The paper's findings on design-2 records (`locktune.ablate.findings`): each verdict on hand-made records
with per-image outcomes (holds, does not hold, does not hold by equivalence, not enough power with the MDE,
no-worse claims, a missing arm, a single seed), several comparisons combined by the stated rule, the
per-image bootstrap used only when every paired record has per-image data, records of the retired design 1
refused, and the grid report's findings table and Base line."""

import math

import numpy as np
import pytest

from locktune.ablate import findings as F
from locktune.ablate.grid import load_grid
from locktune.ablate.records import per_image
from locktune.ablate.report import grid_section, results_document
from locktune.ablate.statistics import UNDERPOWERED
from locktune.errors import LocktuneError

N_IMAGES, CLASSES = 600, 3
DIFFICULTY = np.random.default_rng(7).random(N_IMAGES)  # per image, shared by every arm and seed
LABELS = np.arange(N_IMAGES) % CLASSES


def _task(accuracy: float, shift: int = 0) -> dict:
    """A zero-shot task where an image is right when its difficulty is below `accuracy` (harder images are
    missed by every model first): its metrics and per-image outcomes, as an evaluator records them."""
    correct = (np.roll(DIFFICULTY, shift) < accuracy).astype(int)
    recall = float(np.mean([correct[LABELS == c].mean() for c in range(CLASSES)]))
    return {"kind": "classification", "top1": float(correct.mean()), "mean_per_class_recall": recall,
            "chance_top1": 1 / CLASSES, "images": N_IMAGES,
            "per_image": {"correct": "".join(map(str, correct)), "labels": LABELS.tolist()}}


def _records(arm_accuracies: dict[str, list[float]], images: bool = True, design: int = 2,
             shifts: dict[str, int] = {}, **extra) -> list[dict]:
    """Design-2 records: per arm, one record per seed with two zero-shot benchmarks (the second a shifted
    copy) and a near_ood/ one that the primary metric leaves out (it would flip every verdict: 1 - acc).
    `shifts`: per arm, which images it finds hard moves by that many places (other images right)."""
    out = []
    for order, (arm, accuracies) in enumerate(arm_accuracies.items()):
        for seed, acc in enumerate(accuracies):
            shift = shifts.get(arm, 0)
            ev = {"bench_a": _task(acc, shift), "bench_b": _task(acc, 17 + shift), "near_ood/x": _task(1 - acc)}
            if not images:
                for metrics in ev.values():
                    metrics.pop("per_image")
            record = {"grid": "towers", "arm": arm, "seed": seed, "order": order * 1000 + seed, "label": arm,
                      "train": {"seconds": 1.0, "final_loss": 1.0, "curve": []}, "eval": ev, "eval_seconds": 1.0,
                      "config": {}, **extra}
            if design != 1:
                record["design"] = design
            out.append(record)
    return out


CLEAR_HIGH = [0.70, 0.72, 0.69, 0.71, 0.70]
CLEAR_LOW = [0.55, 0.56, 0.54, 0.57, 0.55]
# Holm over m comparisons needs the exact sign-flip p (at least 2^-n) under 0.05 / m: n >= log2(20 m) seeds,
# 6 for two comparisons, 7 for four.
HIGH_7 = CLEAR_HIGH + [0.71, 0.69]
LOW_7 = CLEAR_LOW + [0.56, 0.55]


def test_per_image_reads_the_contract_field():
    record = _records({"LU": [0.7]})[0]
    correct, labels = per_image(record, "bench_a")
    assert correct.tolist() == (DIFFICULTY < 0.7).astype(int).tolist() and labels.tolist() == LABELS.tolist()
    assert per_image(record, "missing") is None and per_image(_records({"LU": [0.7]}, images=False)[0], "bench_a") is None
    record["eval"]["bench_a"]["per_image"]["labels"] = [0, 1]
    with pytest.raises(LocktuneError, match="bench_a"):
        per_image(record, "bench_a")


def test_clear_win_over_five_seeds_holds_with_an_image_interval():
    v = F.judge("lu_beats_uu", _records({"LU": CLEAR_HIGH, "UU": CLEAR_LOW}))
    assert v.verdict == F.HOLDS, v.measured
    assert "95% seed interval" in v.measured and "hierarchical [" in v.measured and "per-image [" in v.measured
    assert "over 5 paired seeds" in v.measured and "MDE" in v.measured and "Holm-adjusted p=0.031 over 1" in v.measured
    assert "LU beats UU on mean_zero_shot_recall" in v.tested
    # The effect is the primary metric's: zero-shot benchmarks only, near_ood/ left out.
    effect = float(v.measured.split("effect ")[1].split(" pt")[0])
    expected = np.mean([F.RECALL.value(r) for r in _records({"LU": CLEAR_HIGH})]) - \
        np.mean([F.RECALL.value(r) for r in _records({"UU": CLEAR_LOW})])
    assert effect == pytest.approx(100 * expected, abs=0.06) and effect > 10
    for name in ("seed interval [", "hierarchical [", "per-image ["):
        lo, hi = (float(x) for x in v.measured.split(name)[1].split("]")[0].split(","))
        assert 0 < lo < effect < hi, name


def test_clear_loss_does_not_hold():
    v = F.judge("lu_beats_uu", _records({"LU": CLEAR_LOW, "UU": CLEAR_HIGH}))
    assert v.verdict == F.FAILS and "effect -" in v.measured


def test_tiny_effect_with_tight_spread_does_not_hold_by_equivalence():
    uu = [0.600, 0.610, 0.590, 0.605, 0.595]
    lu = [a + d for a, d in zip(uu, [0.002, -0.002, 0.003, 0.0, -0.002])]
    v = F.judge("lu_beats_uu", _records({"LU": lu, "UU": uu}))
    assert v.verdict == F.FAILS, v.measured
    p = float(v.measured.split("(TOST) at ±2.0 pt, adjusted p=")[1].split(";")[0])
    assert p < 0.05 and "level within ±2.0 pt (TOST)" in v.measured


def test_noisy_seeds_have_not_enough_power_and_report_the_mde():
    v = F.judge("lu_beats_uu", _records({"LU": [0.60, 0.50, 0.65, 0.52, 0.58], "UU": [0.55, 0.56, 0.56, 0.57, 0.54]}))
    assert v.verdict == UNDERPOWERED, v.measured
    mde = float(v.measured.split("MDE ")[1].split(" pt")[0])
    assert mde > 5


def test_no_worse_claim_holds_when_equivalent_and_lacks_power_when_noisy():
    lu = [0.600, 0.610, 0.590, 0.605, 0.595]
    close = [a + d for a, d in zip(lu, [0.002, -0.002, 0.003, 0.0, -0.002])]
    v = F.judge("lu_close_to_LU", _records({"LU": lu, "Lu": close}))
    assert v.verdict == F.HOLDS and "non-inferiority at -2.0 pt" in v.measured and "Lu no worse than LU" in v.tested
    noisy = F.judge("lu_close_to_LU", _records({"LU": [0.55, 0.56, 0.56, 0.57, 0.54],
                                                "Lu": [0.56, 0.50, 0.58, 0.51, 0.55]}))
    assert noisy.verdict == UNDERPOWERED
    # A pretrained text tower worth far more than the margin: the claim does not hold.
    assert F.judge("lu_close_to_LU", _records({"LU": CLEAR_HIGH, "Lu": CLEAR_LOW})).verdict == F.FAILS


def test_missing_arm_is_not_run():
    v = F.judge("lu_beats_uu", _records({"LU": CLEAR_HIGH, "uu": CLEAR_LOW}))
    assert v.verdict == F.MISSING and "'UU'" in v.measured


def test_fewer_than_five_paired_seeds_are_not_enough_seeds_whatever_the_effect():
    v = F.judge("lu_beats_uu", _records({"LU": [0.9], "UU": [0.3]}))
    assert v.verdict == F.NOT_ENOUGH_SEEDS
    assert "1 paired seed(s), the rule needs 5" in v.measured and "(effect +" in v.measured
    four = F.judge("lu_beats_uu", _records({"LU": CLEAR_HIGH[:4], "UU": CLEAR_LOW[:4]}))
    assert four.verdict == F.NOT_ENOUGH_SEEDS  # a clear 15-point lead, but 4 seeds: no verdict
    # Seeds are paired by number: LU seeds 0-4 and UU seed 0 only share one.
    unpaired = _records({"LU": CLEAR_HIGH}) + _records({"UU": [0.5]})
    assert F.judge("lu_beats_uu", unpaired).verdict == F.NOT_ENOUGH_SEEDS


def test_without_per_image_data_the_seed_tests_decide_and_say_so():
    v = F.judge("lu_beats_uu", _records({"LU": CLEAR_HIGH, "UU": CLEAR_LOW}, images=False))
    assert v.verdict == F.HOLDS and "image interval" not in v.measured and "seed tests only" in v.measured
    # One record without them is enough to drop the interval.
    records = _records({"LU": CLEAR_HIGH, "UU": CLEAR_LOW})
    records[3]["eval"]["bench_b"].pop("per_image")
    v = F.judge("lu_beats_uu", records)
    assert "image interval" not in v.measured and "bench_b" in v.measured


def test_the_per_image_interval_is_shown_beside_the_seed_tests_never_instead_of_them():
    # Seeds agree, but the two arms get different images right (LU's hard images are others): the 1-point
    # lead is within what another draw of 1,200 test images could give.  The registered rule judges over seeds
    # (the test set is fixed); the image and hierarchical intervals say how far it carries to other images.
    lu, uu = [0.61, 0.612, 0.61, 0.612, 0.61], [0.60, 0.60, 0.601, 0.60, 0.60]
    seeds_only = F.judge("lu_beats_uu", _records({"LU": lu, "UU": uu}, images=False, shifts={"LU": 1}))
    with_images = F.judge("lu_beats_uu", _records({"LU": lu, "UU": uu}, shifts={"LU": 1}))
    assert seeds_only.verdict == with_images.verdict == F.HOLDS, with_images.measured
    lo, hi = (float(x) for x in with_images.measured.split("per-image [")[1].split("]")[0].split(","))
    assert lo < 0 < hi and "per-image [" not in seeds_only.measured


def test_several_comparisons_combine_all_hold_any_fails_else_underpowered():
    assert F.combine([F.HOLDS, F.HOLDS]) == F.HOLDS
    assert F.combine([F.HOLDS, UNDERPOWERED, F.FAILS]) == F.FAILS
    assert F.combine([F.HOLDS, UNDERPOWERED]) == UNDERPOWERED
    assert F.combine([F.HOLDS, UNDERPOWERED, F.NOT_ENOUGH_SEEDS]) == F.NOT_ENOUGH_SEEDS
    # locked_text_at_bottom: every text-trained setting against every text-locked one (here 2 x 1).
    best = F.judge("locked_text_at_bottom", _records({"LU": HIGH_7[:6], "UU": HIGH_7[:6], "LL": [0.3] * 6}))
    assert best.verdict == F.HOLDS and best.tested.startswith("2 comparisons") and "2 holds" in best.measured
    # Five seeds cannot hold two comparisons under Holm (1/32 x 2 > 0.05), however clear the lead.
    five = F.judge("locked_text_at_bottom", _records({"LU": CLEAR_HIGH, "UU": CLEAR_HIGH, "LL": [0.3] * 5}))
    assert five.verdict == UNDERPOWERED and "cannot reach p < 0.05/2" in five.measured
    close = F.judge("locked_text_at_bottom", _records({"LU": HIGH_7[:6], "UU": LOW_7[:6], "LL": LOW_7[:6]}))
    assert close.verdict == F.FAILS  # UU and LL equal (equivalent): LL is not below UU
    bottom = F.judge("locked_text_at_bottom", _records({"LU": HIGH_7, "UU": LOW_7, "LL": [0.34] * 7,
                                                        "uL": [0.35, 0.33, 0.34, 0.35, 0.36, 0.34, 0.35]}))
    assert bottom.verdict == F.HOLDS and bottom.tested.startswith("4 comparisons")


def test_overfitting_finding_compares_losses_lower_is_better():
    def with_losses(records, losses):
        for r in records:
            train, held = losses[r["arm"]][r["seed"]]
            r["eval"]["ood"] = {"kind": "ood_loss", "train_loss": train, "heldout_loss": held, "chance_loss": 3.4,
                                "batch_size": 32}
        return records

    seeds = range(6)  # two comparisons: 6 seeds under Holm
    losses = {"LU": [(2.0 + 0.01 * s, 3.0 + 0.01 * s) for s in seeds],  # gap 1.0
              "UU": [(1.5 - 0.01 * s, 3.2 + 0.02 * s) for s in seeds]}  # lower training loss, gap ~1.7
    arms = {"LU": HIGH_7[:6], "UU": LOW_7[:6]}
    v = F.judge("uu_overfits_training_distribution", with_losses(_records(arms), losses))
    assert v.verdict == F.HOLDS and "nats" in v.measured and "lower is better" in v.tested
    flipped = {"LU": losses["UU"], "UU": losses["LU"]}
    v = F.judge("uu_overfits_training_distribution", with_losses(_records(arms), flipped))
    assert v.verdict == F.FAILS


def test_records_of_the_retired_design_1_are_refused_not_judged():
    """A record without "design" (design 1's) or of another design is never judged under this rule, alone or
    mixed with design-2 records: the error says why and where the old table went."""
    old = _records({"LU": [0.49, 0.50, 0.51], "UU": [0.39, 0.40, 0.41]}, design=1)
    assert all("design" not in r for r in old)
    for records in (old, old + _records({"LU": CLEAR_HIGH, "UU": CLEAR_LOW}), _records({"LU": CLEAR_HIGH}, design=3)):
        with pytest.raises(LocktuneError, match=r"records of design \d are not judged.*design1.md"):
            F.judge("lu_beats_uu", records)


@pytest.mark.slow  # loads every grid file, each arm's config checked: ~65 s (make test-slow runs it)
def test_every_grid_finding_is_judged_on_design_2_records():
    """Every shipped grid's findings run on design-2 records of its arms (no crash; a verdict word)."""
    from locktune.packaged import configs_folder

    for path in sorted((configs_folder() / "studies").glob("*.yaml")):
        if path.name == "base.yaml":
            continue
        grid = load_grid(path)
        records = _records({a.name: CLEAR_LOW if i else CLEAR_HIGH for i, a in enumerate(grid.arms)})
        for name in grid.findings:
            v = F.judge(name, records)
            assert v.verdict in (F.HOLDS, F.FAILS, UNDERPOWERED, F.MISSING), (name, v)


def test_grid_report_findings_table_and_base_line(tmp_path):
    grid = load_grid("studies/loss_batch.yaml")
    new = _records({"global-2proc": HIGH_7[:6], "local-2proc": LOW_7[:6], "batch-16": LOW_7[:6],
                    "batch-32": LOW_7[:6], "batch-128": HIGH_7[:6]}, config={"train": {"batch_size": 128}})
    text = "\n".join(grid_section(grid, new, tmp_path, tmp_path, plots=False))
    # The Base line is the grid's base config (32 pairs a batch), whatever the first record says.
    assert "125 steps of 32 pairs" in text
    assert "| finding (paper) | tested here | measured here (effect a - b; 95% seed interval" in text
    assert ("the 2 findings' 2 comparisons are one family, Holm-adjusted at 0.05; each needs at least 5 paired "
            "seeds, and any can hold only with 6 or more") in text and "these records pair 6 seeds" in text
    assert "global-2proc beats local-2proc on mean_zero_shot_recall" in text and "**holds**" in text
    assert "Records of design" not in text
    document = results_document([(grid, new)], tmp_path, "locktune ablate x", plots=False)
    assert "| loss-batch | A global contrastive loss" in document and "archived in docs/studies/design1.md" in document
    assert math.isfinite(len(document))


def test_sigmoid_gap_is_the_difference_of_the_per_seed_leads():
    """sigmoid_gap_largest_at_small_batch: per seed (sig16 - soft16) - (sig256 - soft256); a lead of ~10
    points at batch 16 and none at 256 holds; the same lead at both batches is not a larger gap."""
    wide = _records({"sigmoid-16": CLEAR_HIGH, "softmax-16": CLEAR_LOW, "sigmoid-256": CLEAR_LOW,
                     "softmax-256": CLEAR_LOW})
    v = F.judge("sigmoid_gap_largest_at_small_batch", wide)
    assert v.verdict == F.HOLDS, v.measured
    effect = float(v.measured.split("effect ")[1].split(" pt")[0])
    leads = [F.RECALL.value(a) - F.RECALL.value(b) for a, b in zip(_records({"s": CLEAR_HIGH}), _records({"s": CLEAR_LOW}))]
    assert effect == pytest.approx(100 * np.mean(leads), abs=0.06)
    same = _records({"sigmoid-16": CLEAR_HIGH, "softmax-16": CLEAR_LOW, "sigmoid-256": CLEAR_HIGH,
                     "softmax-256": CLEAR_LOW})
    assert F.judge("sigmoid_gap_largest_at_small_batch", same).verdict != F.HOLDS
    assert F.judge("sigmoid_gap_largest_at_small_batch", wide[:10]).verdict == F.MISSING  # no batch-256 arms
    assert F.judge("sigmoid_no_worse_b16", wide).verdict == F.HOLDS
    assert F.judge("data_size_lu_beats_uu_1k", _records({"LU-1k": CLEAR_HIGH, "UU-1k": CLEAR_LOW})).verdict == F.HOLDS


def test_a_grids_reading_follows_its_design_2_findings_table_and_names_only_its_findings(tmp_path):
    import dataclasses

    grid = dataclasses.replace(load_grid("studies/loss_batch.yaml"),
                               reading={"global_beats_local_loss": "Two processes of 16 rows differ little here."})
    new = _records({"global-2proc": CLEAR_HIGH, "local-2proc": CLEAR_LOW})
    text = "\n".join(grid_section(grid, new, tmp_path, tmp_path, plots=False))
    table_end = text.index("Reading (written after the run")
    assert text.index("| finding (paper) |") < table_end
    assert "- `global_beats_local_loss`: Two processes of 16 rows differ little here." in text[table_end:]
    bad = tmp_path / "bad.yaml"
    bad.write_text(grid.path.read_text().replace("base: base.yaml", f"base: {grid.base}") + "reading: {lu_beats_uu: 'not a finding of this grid'}\n")
    with pytest.raises(LocktuneError, match="reading names \\['lu_beats_uu'\\]"):
        load_grid(bad)


def test_the_image_interval_does_not_depend_on_the_order_of_a_records_benchmarks():
    records = _records({"LU": CLEAR_HIGH, "UU": CLEAR_LOW})
    shuffled = [dict(r, eval=dict(reversed(list(r["eval"].items())))) for r in records]  # as a sorted write gives
    first, second = (F.judge("lu_beats_uu", rs).measured for rs in (records, shuffled))
    assert "per-image [" in first and first == second


# --- round 3 (issue 29 item 4): intersection-union findings on a per-seed derived value ---------------------------

MID = [0.62, 0.63, 0.61, 0.64, 0.62]
ABOVE = [0.80, 0.82, 0.79, 0.81, 0.80]  # clearly above CLEAR_HIGH on every seed


def _verdict(name, arms):
    return F.judge(name, _records(arms))


def test_lu_best_iut_is_one_comparison_that_fails_when_one_setting_beats_lu():
    win = _verdict("lu_best_iut", {"LU": CLEAR_HIGH, "UU": CLEAR_LOW, "Lu": MID, "LL": CLEAR_LOW})
    assert win.verdict == F.HOLDS and "LU minus the best of Lu, LL, UU" in win.tested
    assert "2 comparisons" not in win.tested  # one registered comparison, however many settings
    # The effect is LU minus the best other (Lu, ~8 points), not minus the worst.
    assert 6 < float(win.measured.split("effect ")[1].split(" pt")[0]) < 10
    assert _verdict("lu_best_iut", {"LU": CLEAR_LOW, "UU": CLEAR_HIGH, "Lu": MID}).verdict == F.FAILS
    one = {"LU": CLEAR_HIGH, "UU": CLEAR_LOW, "Lu": CLEAR_LOW, "LL": ABOVE}  # only LU vs LL fails
    assert _verdict("lu_best_iut", one).verdict == F.FAILS
    assert _verdict("lu_beats_uu", one).verdict == F.HOLDS
    assert _verdict("lu_best_iut", {"UU": CLEAR_LOW}).verdict == F.MISSING


def test_text_locked_at_bottom_iut_compares_the_lowest_trained_with_the_highest_locked():
    win = _verdict("text_locked_at_bottom_iut", {"LU": CLEAR_HIGH, "Lu": MID, "LL": CLEAR_LOW, "UL": CLEAR_LOW,
                                                 "uL": [0.3] * 5})
    assert win.verdict == F.HOLDS and "the lowest of LU, Lu minus the highest of LL, UL, uL" in win.tested
    loss = _verdict("text_locked_at_bottom_iut", {"LU": CLEAR_LOW, "Lu": CLEAR_LOW, "LL": CLEAR_HIGH, "UL": MID})
    assert loss.verdict == F.FAILS
    one = {"LU": CLEAR_HIGH, "Lu": MID, "LL": CLEAR_LOW, "UL": CLEAR_LOW, "uL": HIGH_7[:5]}  # uL above Lu only
    assert _verdict("text_locked_at_bottom_iut", one).verdict == F.FAILS
    # A seed where one arm has no record is left out, as an unpaired seed is: four seeds are not enough.
    records = [r for r in _records(one) if not (r["arm"] == "UL" and r["seed"] == 4)]
    assert F.judge("text_locked_at_bottom_iut", records).verdict == F.NOT_ENOUGH_SEEDS


def test_bert_best_text_tower_needs_bert_above_both_t5_and_the_clip_style_tower():
    win = _verdict("bert_best_text_tower", {"bert-scratch": CLEAR_HIGH, "t5-scratch": MID, "text-medium": CLEAR_LOW})
    assert win.verdict == F.HOLDS
    loss = _verdict("bert_best_text_tower", {"bert-scratch": CLEAR_LOW, "t5-scratch": CLEAR_HIGH, "text-medium": MID})
    assert loss.verdict == F.FAILS
    one = {"bert-scratch": CLEAR_HIGH, "t5-scratch": CLEAR_LOW, "text-medium": ABOVE}
    assert _verdict("bert_best_text_tower", one).verdict == F.FAILS


def test_any_image_architecture_iut_needs_every_architecture_above_twice_chance():
    # The hand-made benchmarks have 3 classes: twice chance is 2/3.
    win = _verdict("any_image_architecture_iut", {"efficientnet_lite0": ABOVE, "mobilenet_v2": [0.78, 0.77, 0.80,
                                                                                                 0.79, 0.78]})
    assert win.verdict == F.HOLDS
    assert _verdict("any_image_architecture_iut", {"efficientnet_lite0": CLEAR_LOW,
                                                   "mobilenet_v2": CLEAR_LOW}).verdict == F.FAILS
    one = {"efficientnet_lite0": ABOVE, "mobilenet_v2": CLEAR_LOW}
    assert _verdict("any_image_architecture_iut", one).verdict == F.FAILS


def test_bigger_batch_at_the_same_pairs_seen_needs_every_step_up_to_help():
    def at(arms, steps):
        records = _records(arms)
        for r in records:
            batch = int(r["arm"].split("-")[1])
            r["config"] = {"train": {"batch_size": batch, "steps": steps(batch)}}
        return records

    same_pairs = lambda batch: 4000 // batch  # 250 x 16, 125 x 32, 31 x 128 (3,968 pairs)
    win = F.judge("bigger_batch_better_same_pairs", at({"batch-16": CLEAR_LOW, "batch-32": MID,
                                                         "batch-128": CLEAR_HIGH}, same_pairs))
    assert win.verdict == F.HOLDS and "batch-16 < batch-32 < batch-128" in win.tested
    loss = F.judge("bigger_batch_better_same_pairs", at({"batch-16": CLEAR_HIGH, "batch-32": MID,
                                                          "batch-128": CLEAR_LOW}, same_pairs))
    assert loss.verdict == F.FAILS
    one = at({"batch-16": CLEAR_LOW, "batch-32": CLEAR_HIGH, "batch-128": MID}, same_pairs)  # 128 below 32 only
    assert F.judge("bigger_batch_better_same_pairs", one).verdict == F.FAILS
    same_steps = F.judge("bigger_batch_better_same_pairs", at({"batch-16": CLEAR_LOW, "batch-32": MID,
                                                                "batch-128": CLEAR_HIGH}, lambda batch: 120))
    assert same_steps.verdict == F.MISSING and "same pairs seen" in same_steps.measured


def test_gradual_unlock_iut_is_non_inferiority_against_the_better_schedule():
    win = _verdict("gradual_unlock_does_not_help_iut", {"locked": CLEAR_HIGH, "unlock-half": CLEAR_LOW,
                                                        "unlock-gradual": MID})
    assert win.verdict == F.HOLDS and "(non-inferiority)" in win.tested
    level = _verdict("gradual_unlock_does_not_help_iut", {"locked": CLEAR_HIGH, "unlock-half": CLEAR_HIGH,
                                                          "unlock-gradual": CLEAR_LOW})
    assert level.verdict == F.HOLDS  # equal to the better schedule: no worse within the margin
    loss = _verdict("gradual_unlock_does_not_help_iut", {"locked": CLEAR_LOW, "unlock-half": CLEAR_HIGH,
                                                         "unlock-gradual": MID})
    assert loss.verdict == F.FAILS
    one = {"locked": CLEAR_HIGH, "unlock-half": CLEAR_LOW, "unlock-gradual": ABOVE}  # only the gradual one wins
    assert _verdict("gradual_unlock_does_not_help_iut", one).verdict == F.FAILS


ROUND_3 = ["towers_r3", "towers_scratch", "text_locked", "text_towers", "image_towers", "loss_batch", "schedules",
           "head", "multilingual"]


@pytest.mark.parametrize("name", ROUND_3)
def test_every_round_3_grid_pairs_the_seeds_its_registered_family_needs(name):
    """docs/studies/round3.md: each grid's family (every comparison of its findings) and its seeds are chosen
    together: every arm runs the same seeds, at least seeds_needed(family size)."""
    from locktune.ablate.verdict import seeds_needed

    grid = load_grid(f"studies/{name}.yaml")
    assert grid.design == 2  # a reading is written once the grid has run (towers_r3)
    seeds = {a.seeds for a in grid.arms}
    assert len(seeds) == 1, "every arm of a round-3 grid runs the same seeds"
    records = _records({a.name: CLEAR_HIGH for a in grid.arms})
    family = sum(len(F.FINDINGS.get(f).tests(records)) for f in grid.findings)
    expected = {"towers_r3": 8, "towers_scratch": 2, "text_locked": 1, "text_towers": 2, "image_towers": 1,
                "loss_batch": 2, "schedules": 1, "head": 1, "multilingual": 2}
    assert family == expected[name]
    assert len(seeds.pop()) >= seeds_needed(family)


def test_a_claim_split_over_grids_holds_only_where_every_grid_holds():
    """text_locked_at_bottom: towers-r3, towers-scratch and text-locked each judge the finding within their own
    family; the paper's claim holds only if all three hold, fails if any fails, and is not run while one is."""
    from locktune.ablate.claims import CLAIMS, judge_claim

    claim = CLAIMS.get("text_locked_at_bottom")
    finding = claim.finding
    every = {grid: {finding: F.HOLDS} for grid in claim.grids}
    assert judge_claim(claim, every).verdict == F.HOLDS
    assert judge_claim(claim, {**every, "towers-scratch": {finding: F.FAILS}}).verdict == F.FAILS
    assert judge_claim(claim, {**every, "towers-scratch": {finding: UNDERPOWERED}}).verdict == UNDERPOWERED
    one_missing = {grid: verdicts for grid, verdicts in every.items() if grid != "towers-r3"}
    assert judge_claim(claim, one_missing).verdict == F.MISSING
    # A failed grid decides the conjunction even while another grid has not run.
    assert judge_claim(claim, {**one_missing, "text-locked": {finding: F.FAILS}}).verdict == F.FAILS


def test_results_document_judges_the_split_claim_from_each_grids_records(tmp_path):
    text_locked = load_grid("studies/text_locked.yaml")
    scratch = load_grid("studies/towers_scratch.yaml")
    wins = _records({"LU": CLEAR_HIGH, "Lu": MID, "LL": CLEAR_LOW, "UL": CLEAR_LOW, "uL": [0.3] * 5})
    document = results_document([(text_locked, wins)], tmp_path, None, plots=False)
    row = next(line for line in document.splitlines() if line.startswith("| Any setting that locks the text"))
    assert "text-locked: holds" in row and "towers-r3: not run" in row and row.endswith("| not run |")
    # uu below LL in towers-scratch: the claim fails there, so it fails, though text-locked holds.
    below = _records({"UU": HIGH_7[:6], "uu": LOW_7[:6], "LL": HIGH_7[:6]})
    document = results_document([(text_locked, wins), (scratch, below)], tmp_path, None, plots=False)
    row = next(line for line in document.splitlines() if line.startswith("| Any setting that locks the text"))
    assert "towers-scratch: does not hold" in row and row.endswith("| does not hold |")
    # Without any of the claim's grids the document has no such table (committed RESULTS.md unchanged).
    loss = load_grid("studies/loss_batch.yaml")
    assert "Claims split over several grids" not in results_document([(loss, [])], tmp_path, None, plots=False)
