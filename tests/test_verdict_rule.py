"""The pre-registered verdict rule (`locktune.ablate.verdict`) on hand-made records, each number checked
against an independent computation: scipy.stats (ttest_rel, permutation_test over paired samples,
false_discovery_control, the noncentral t), a Holm adjustment written out by hand, hand-worked sign-flip
examples and a brute-force two-level bootstrap."""

import math

import numpy as np
import pytest
from scipy import stats

from locktune.ablate import verdict as V
from locktune.ablate.statistics import BEATS, FAILS, HOLDS, NO_WORSE, UNDERPOWERED
from locktune.errors import LocktuneError


def test_exact_sign_flip_hand_worked():
    # 5 all-positive differences: only the observed pattern reaches the observed sum: 1/32.
    assert V.sign_flip_greater([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(1 / 32)
    # d = (3, -1, 2, 2), observed sum 6: of the 16 sums of ±3 ±1 ±2 ±2, two reach 6 (+ - + + and + + + +).
    assert V.sign_flip_greater([3.0, -1.0, 2.0, 2.0]) == pytest.approx(2 / 16)
    # d = (1, 1, 1, 1, -1): sums >= 3 need at most one minus among five ones: 1 + 5 = 6 of 32.
    assert V.sign_flip_greater([1.0, 1.0, 1.0, 1.0, -1.0]) == pytest.approx(6 / 32)


@pytest.mark.parametrize("seed", range(4))
def test_sign_flip_and_t_match_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.5, 0.03, size=7)
    b = a - rng.normal(0.01, 0.02, size=7)
    reference = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                       alternative="greater", n_resamples=np.inf)
    assert V.sign_flip_greater(a - b) == pytest.approx(reference.pvalue, rel=1e-12)
    assert V.t_greater(a - b) == pytest.approx(stats.ttest_rel(a, b, alternative="greater").pvalue, rel=1e-9)


def _holm_by_hand(p):
    """Holm written out: sorted p, multiplied by m, m-1, ..., cumulative maximum, capped at 1."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, best = [0.0] * len(p), 0.0
    for k, i in enumerate(order):
        best = max(best, (len(p) - k) * p[i])
        adjusted[i] = min(1.0, best)
    return adjusted


def test_holm_and_benjamini_hochberg_against_independent_computations():
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.049]
    assert V.holm(p) == pytest.approx(_holm_by_hand(p))
    # Hand-worked: sorted 0.005, 0.01, 0.03, 0.04, 0.049, 0.2 x 6, 5, 4, 3, 2, 1 -> 0.03, 0.05, 0.12, 0.12, 0.12, 0.2.
    assert V.holm(p) == pytest.approx([0.05, 0.12, 0.12, 0.03, 0.2, 0.12])
    assert V.benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p, method="bh"))


def test_seeds_needed_follows_the_sign_flip_floor():
    assert V.seeds_needed(1) == 5  # 1/32 < 0.05
    assert V.seeds_needed(6) == 7  # 0.05/6 = 0.0083: 1/64 too big, 1/128 fits
    assert V.seeds_needed(19) == 9  # 0.05/19 = 0.0026: 1/512
    for m in (1, 2, 6, 19, 40):
        n = V.seeds_needed(m)
        assert 2.0 ** -n <= 0.05 / m and (n == 5 or 2.0 ** -(n - 1) > 0.05 / m)


def test_t_interval_matches_scipy():
    d = np.array([0.031, 0.012, 0.044, 0.027, 0.019, 0.035])
    lo, hi = V.t_interval(d)
    ref = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (lo, hi) == pytest.approx(ref, rel=1e-9)


def test_mde_reaches_80_percent_power_on_the_noncentral_t():
    sd, n, alpha = 0.02, 6, 0.05 / 4
    mde = V.minimum_detectable_effect(sd, n, alpha)
    crit = stats.t.ppf(1 - alpha, n - 1)
    assert stats.nct.sf(crit, n - 1, mde * math.sqrt(n) / sd) == pytest.approx(0.8, abs=1e-8)
    # And by simulation: the one-sided t-test at alpha rejects ~80% of samples with true mean = MDE.
    rng = np.random.default_rng(0)
    samples = rng.normal(mde, sd, size=(20000, n))
    p = stats.ttest_1samp(samples, 0.0, axis=1, alternative="greater").pvalue
    assert np.mean(p < alpha) == pytest.approx(0.8, abs=0.015)


def _arms(differences, base=0.5):
    return ({s: base + d for s, d in enumerate(differences)}, {s: base for s in range(len(differences))})


def test_a_clear_win_holds_when_both_tests_agree_after_holm():
    a, b = _arms([0.030, 0.025, 0.041, 0.033, 0.028, 0.036, 0.030])
    (row,) = V.judge_family([V.Registered("win", BEATS, a, b)])
    assert row.verdict == HOLDS and row.family_size == 1
    assert row.sign_flip_p == pytest.approx(1 / 128) and row.p == row.p_adjusted == max(row.t_p, 1 / 128)
    assert row.seed_interval[0] > 0 and "holds" in row.text()


def test_fewer_than_five_seeds_is_never_a_verdict_but_counts_in_the_family():
    strong = _arms([0.05, 0.06, 0.05, 0.07, 0.06, 0.05, 0.06, 0.05])
    few = _arms([0.05, 0.06, 0.05, 0.07])
    rows = V.judge_family([V.Registered("strong", BEATS, *strong), V.Registered("few", BEATS, *few)])
    assert rows[1].verdict == V.NOT_ENOUGH_SEEDS and "needs 5" in rows[1].text()
    # The strong one's p (1/256 from the sign flip) is doubled by Holm: two registered comparisons.
    assert rows[0].p_adjusted == pytest.approx(2 * max(rows[0].t_p, 1 / 256)) and rows[0].verdict == HOLDS


def test_five_seeds_cannot_hold_in_a_family_of_two():
    """1/32 x 2 > 0.05: the t-test alone would say p < 0.001, the sign-flip floor keeps it from holding."""
    five = _arms([0.05, 0.06, 0.05, 0.07, 0.06])
    rows = V.judge_family([V.Registered("x", BEATS, *five), V.Registered("y", BEATS, *five)])
    assert all(r.t_p < 0.001 and r.p_adjusted == pytest.approx(2 / 32) for r in rows)
    assert all(r.verdict == UNDERPOWERED and math.isinf(r.mde) for r in rows)


def test_t_and_sign_flip_must_agree():
    # One big outlier carries the mean: the t-test is unconvinced though 6 of 7 seeds are positive...
    a, b = _arms([0.001, 0.002, 0.001, 0.003, 0.002, 0.001, -0.2])
    (row,) = V.judge_family([V.Registered("outlier", BEATS, a, b)])
    assert row.verdict == UNDERPOWERED and row.p == max(row.t_p, row.sign_flip_p)
    # ...and the reverse: a sign pattern the t-test likes cannot beat the flip floor with many small values.
    c, d = _arms([0.02, 0.021, 0.019, 0.02, 0.02])
    (row,) = V.judge_family([V.Registered("tight", BEATS, c, d)], alpha=0.02)
    assert row.t_p < 1e-6 and row.sign_flip_p == pytest.approx(1 / 32) and row.verdict == UNDERPOWERED


def test_a_clear_loss_does_not_hold():
    a, b = _arms([-0.04, -0.05, -0.045, -0.06, -0.05, -0.04, -0.05])
    (row,) = V.judge_family([V.Registered("loss", BEATS, a, b)])
    assert row.verdict == FAILS and row.p_adjusted > 0.5 and row.against_p_adjusted < 0.05


def test_level_only_from_tost_and_it_fails_a_beats_claim():
    a, b = _arms([0.001, -0.002, 0.0015, 0.0, -0.001, 0.0005, 0.001])
    (row,) = V.judge_family([V.Registered("level", BEATS, a, b, margin=0.02)])
    d = np.array([0.001, -0.002, 0.0015, 0.0, -0.001, 0.0005, 0.001])
    tost = max(stats.ttest_1samp(d, -0.02, alternative="greater").pvalue,
               stats.ttest_1samp(d, 0.02, alternative="less").pvalue)
    assert row.tost_p_adjusted == pytest.approx(tost, rel=1e-9)
    assert row.level and row.verdict == FAILS and "level within ±2.0 pt (TOST)" in row.text()
    # A noisy zero is not "level": not enough power.
    a, b = _arms([0.05, -0.06, 0.04, -0.03, 0.02, -0.05, 0.03])
    (row,) = V.judge_family([V.Registered("noisy", BEATS, a, b)])
    assert not row.level and row.verdict == UNDERPOWERED and math.isfinite(row.mde)


def test_no_worse_claim_holds_fails_or_lacks_power():
    inside = _arms([-0.005, 0.002, -0.004, 0.0, -0.003, 0.001, -0.002])
    far_behind = _arms([-0.06, -0.05, -0.07, -0.055, -0.065, -0.06, -0.05])
    noisy = _arms([0.03, -0.06, 0.02, -0.05, 0.01, -0.04, 0.0])
    rows = V.judge_family([V.Registered("in", NO_WORSE, *inside), V.Registered("far", NO_WORSE, *far_behind),
                           V.Registered("noisy", NO_WORSE, *noisy)])
    d = np.array([-0.005, 0.002, -0.004, 0.0, -0.003, 0.001, -0.002])
    assert rows[0].t_p == pytest.approx(stats.ttest_1samp(d, -0.02, alternative="greater").pvalue, rel=1e-9)
    assert [r.verdict for r in rows] == [HOLDS, FAILS, UNDERPOWERED]


def test_holm_is_applied_across_the_family_and_bh_is_looser():
    rng = np.random.default_rng(5)
    family = [V.Registered(f"c{k}", BEATS, *_arms(rng.normal(mean, 0.02, size=8)))
              for k, mean in enumerate([0.03, 0.015, 0.012, 0.0, 0.02])]
    rows = V.judge_family(family)
    raw = [max(stats.ttest_1samp(np.array(list(r.a.values())) - 0.5, 0, alternative="greater").pvalue,
               stats.permutation_test((np.array(list(r.a.values())), np.array(list(r.b.values()))),
                                      lambda x, y: np.mean(x - y), permutation_type="samples",
                                      alternative="greater", n_resamples=np.inf).pvalue) for r in family]
    assert [r.p for r in rows] == pytest.approx(raw, rel=1e-9)
    assert [r.p_adjusted for r in rows] == pytest.approx(_holm_by_hand(raw))
    bh = V.judge_family(family, correction="bh")
    assert [r.p_adjusted for r in bh] == pytest.approx(stats.false_discovery_control(raw))
    assert sum(r.verdict == HOLDS for r in bh) >= sum(r.verdict == HOLDS for r in rows)


def _hierarchical_by_hand(tasks, draws, seed):
    """Loop by loop: the same generator calls, per draw the seeds then each benchmark's images; per benchmark
    the mean over drawn seeds of the score difference (mean per-class recall, accuracy without labels),
    averaged over the benchmarks."""
    rng = np.random.default_rng(seed)
    n_seeds = tasks[0][0].shape[0]
    out = []
    for _ in range(draws):
        seeds = rng.integers(0, n_seeds, size=n_seeds)
        drawn = [rng.integers(0, a.shape[1], size=a.shape[1]) for a, _, _ in tasks]
        per_task = []
        for (a, b, labels), images in zip(tasks, drawn):
            per_seed = []
            for s in seeds:
                score = []
                for arm in (a, b):
                    by_class = {}
                    for i in images:
                        by_class.setdefault(0 if labels is None else labels[i], []).append(arm[s, i])
                    score.append(np.mean([np.mean(v) for _, v in sorted(by_class.items())]))
                per_seed.append(score[0] - score[1])
            per_task.append(np.mean(per_seed))
        out.append(np.mean(per_task))
    return np.array(out)


def test_hierarchical_bootstrap_matches_a_loop_and_is_wider_than_the_image_interval():
    rng = np.random.default_rng(1)
    seeds, images = 6, 40
    labels = rng.integers(0, 3, size=images)
    skill = rng.normal(0.0, 0.1, size=(seeds, 1))  # seed noise the per-image interval cannot see
    a = (rng.random((seeds, images)) < 0.6 + skill).astype(float)
    b = (rng.random((seeds, images)) < 0.5).astype(float)
    got = V.hierarchical_effects([(a, b, labels)], draws=30, seed=3)
    assert got == pytest.approx(_hierarchical_by_hand([(a, b, labels)], 30, 3), abs=1e-12)
    # Several benchmarks, one scored by accuracy (no labels), of other sizes; counted a few draws at a time.
    other_a, other_b = (rng.random((seeds, 25)) < 0.7).astype(float), (rng.random((seeds, 25)) < 0.4).astype(float)
    few = rng.integers(0, 2, size=17)
    third = ((rng.random((seeds, 17)) < 0.5).astype(float), (rng.random((seeds, 17)) < 0.5).astype(float), few)
    tasks = [(a, b, labels), (other_a, other_b, None), third]
    for chunk in (0, 7):
        got = V.hierarchical_effects(tasks, draws=25, seed=5, chunk=chunk)
        assert got == pytest.approx(_hierarchical_by_hand(tasks, 25, 5), abs=1e-12)
    wide = V.hierarchical_interval([(a, b, labels)], draws=400)
    narrow = V.multi_task_interval([(a, b, labels)], draws=400)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


def test_family_row_carries_seed_hierarchical_and_image_intervals():
    rng = np.random.default_rng(2)
    a = (rng.random((5, 30)) < 0.7).astype(float)
    b = (rng.random((5, 30)) < 0.4).astype(float)
    values_a = {s: a[s].mean() for s in range(5)}
    values_b = {s: b[s].mean() for s in range(5)}
    (row,) = V.judge_family([V.Registered("x", BEATS, values_a, values_b, tasks=[(a, b, None)])], draws=200)
    assert row.hierarchical_interval is not None and row.image_interval is not None
    assert "95% seed interval" in row.text() and "per-image" in row.text()


def test_registered_from_records_and_bad_input():
    records = [{"arm": arm, "seed": s, "loss": base - 0.01 * s} for arm, base in (("LU", 1.0), ("UU", 1.2))
               for s in range(5)]
    reg = V.registered_from_records(records, "lower loss", "LU", "UU", lambda r: r["loss"], lower_is_better=True)
    assert reg.a[0] == -1.0 and reg.b[4] == pytest.approx(-1.16)
    with pytest.raises(LocktuneError, match="unknown claim 'better'"):
        V.judge_family([V.Registered("x", "better", {}, {})])
    with pytest.raises(LocktuneError, match="unknown multiplicity correction 'bonf'"):
        V.judge_family([], correction="bonf")
    with pytest.raises(LocktuneError, match="share a name"):
        V.judge_family([reg, reg])
