"""The paired statistics of `locktune.ablate.statistics`, each checked against an independent computation:
scipy.stats for t-test p-values and t quantiles, a hand-worked sign-flip example, a float64 brute-force
bootstrap over every resample of a tiny set; and the verdict rule on hand-made records for each outcome."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from locktune.ablate import statistics as S
from locktune.errors import LocktuneError


@pytest.mark.parametrize("t,dof", [(0.0, 1), (0.5, 2), (2.1, 4), (-1.3, 4), (3.7, 9), (12.0, 3), (1.96, 200)])
def test_t_sf_matches_scipy(t, dof):
    assert S.t_sf(t, dof) == pytest.approx(stats.t.sf(t, dof), rel=1e-9, abs=1e-13)


@pytest.mark.parametrize("q,dof", [(0.975, 1), (0.975, 2), (0.975, 4), (0.8, 4), (0.8, 2), (0.95, 11), (0.1, 5)])
def test_t_quantile_matches_scipy(q, dof):
    assert S.t_quantile(q, dof) == pytest.approx(stats.t.ppf(q, dof), rel=1e-9)


def test_paired_t_test_matches_scipy():
    a = np.array([0.61, 0.58, 0.64, 0.60, 0.63])
    b = np.array([0.57, 0.57, 0.60, 0.59, 0.58])
    t, p = S.paired_t_test(a - b)
    reference = stats.ttest_rel(a, b)
    assert t == pytest.approx(reference.statistic, rel=1e-12)
    assert p == pytest.approx(reference.pvalue, rel=1e-9)


def test_paired_t_test_without_spread():
    assert S.paired_t_test([0.01, 0.01, 0.01]) == (math.inf, 0.0)
    assert S.paired_t_test([0.0, 0.0]) == (0.0, 1.0)
    with pytest.raises(LocktuneError, match="at least 2 paired seeds"):
        S.paired_t_test([0.1])


def test_sign_flip_hand_worked():
    # d = (1, 2, 3): the 8 sign patterns give |sum| = 6, 0, 2, 4, 4, 2, 0, 6 -> two reach |6|: p = 2/8.
    assert S.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    # d = (3, -1, 2, 2): observed |sum| = 6; |±3 ±1 ±2 ±2| >= 6 for (+,-,+,+), (+,+,+,+) and their negatives: 4/16.
    assert S.sign_flip_p([3.0, -1.0, 2.0, 2.0]) == pytest.approx(4 / 16)
    # The floor: all differences the same sign, 5 seeds: 2/32 > 0.05.
    assert S.sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)


def test_tost_and_non_inferiority_match_scipy_one_sided_tests():
    d = np.array([0.004, -0.006, 0.002, 0.001, -0.003, 0.005])
    margin = 0.02
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    assert S.non_inferiority(d, margin) == pytest.approx(lower, rel=1e-9)
    assert S.tost(d, margin) == pytest.approx(max(lower, upper), rel=1e-9)


def test_minimum_detectable_effect_formula_and_power():
    sd, n = 0.02, 5
    expected = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    mde = S.minimum_detectable_effect(sd, n)
    assert mde == pytest.approx(expected, rel=1e-9)
    # The exact power of the two-sided paired t-test at that effect (noncentral t) is close to 80%.
    crit, nc = stats.t.ppf(0.975, n - 1), mde / (sd / math.sqrt(n))
    power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
    assert 0.75 < power < 0.85
    assert S.minimum_detectable_effect(sd, 1) == math.inf


def _brute_effects(a, b, labels, resamples):
    """float64 loops: per resample, per seed, the score of each arm (accuracy or mean per-class recall)."""
    out = []
    for idx in resamples:
        diffs = []
        for s in range(len(a)):
            scores = []
            for arm in (a, b):
                if labels is None:
                    scores.append(sum(float(arm[s][i]) for i in idx) / len(idx))
                else:
                    recalls = []
                    for c in sorted(set(labels)):
                        members = [i for i in idx if labels[i] == c]
                        if members:
                            recalls.append(sum(float(arm[s][i]) for i in members) / len(members))
                    scores.append(sum(recalls) / len(recalls))
            diffs.append(scores[0] - scores[1])
        out.append(sum(diffs) / len(diffs))
    return np.array(out)


@pytest.mark.parametrize("labels", [None, [0, 0, 1, 1]])
def test_bootstrap_effects_match_brute_force_over_every_resample(labels):
    a = np.array([[1, 0, 1, 1], [1, 1, 0, 1]])
    b = np.array([[0, 0, 1, 0], [1, 0, 0, 1]])
    every = np.array(list(itertools.product(range(4), repeat=4)))  # all 256 ordered resamples
    got = S.bootstrap_effects(a, b, every, labels)
    assert np.allclose(got, _brute_effects(a.tolist(), b.tolist(), labels, every.tolist()), atol=1e-12)


def _brute_summary_effects(tasks, combos):
    """float64 loops: per combination of one resample per benchmark, per seed, each arm's score averaged over
    the benchmarks (mean per-class recall, or accuracy without labels), then a - b averaged over seeds."""
    def score(row, idx, labels):
        if labels is None:
            return sum(float(row[i]) for i in idx) / len(idx)
        recalls = []
        for c in sorted(set(labels)):
            members = [i for i in idx if labels[i] == c]
            if members:
                recalls.append(sum(float(row[i]) for i in members) / len(members))
        return sum(recalls) / len(recalls)

    out = []
    for combo in combos:
        diffs = []
        for s in range(len(tasks[0][0])):
            a = sum(score(t[0][s], idx, t[2]) for t, idx in zip(tasks, combo)) / len(tasks)
            b = sum(score(t[1][s], idx, t[2]) for t, idx in zip(tasks, combo)) / len(tasks)
            diffs.append(a - b)
        out.append(sum(diffs) / len(diffs))
    return np.array(out)


MULTI = [([[1, 0, 1], [1, 1, 0]], [[0, 0, 1], [1, 0, 0]], [0, 1, 1]),  # 3 images, 2 classes
         ([[1, 1, 0, 1], [0, 1, 1, 1]], [[1, 0, 0, 1], [0, 0, 1, 1]], None)]  # 4 images, accuracy


def test_multi_benchmark_bootstrap_matches_brute_force_over_every_resample_pair():
    first = list(itertools.product(range(3), repeat=3))  # all 27 resamples of the first benchmark
    second = list(itertools.product(range(4), repeat=4))[::7]  # every 7th of the 256 of the second
    combos = [(x, y) for x in first for y in second]
    tasks = [(np.array(a), np.array(b), labels) for a, b, labels in MULTI]
    got = S.multi_task_effects(tasks, [np.array([c[0] for c in combos]), np.array([c[1] for c in combos])])
    assert np.allclose(got, _brute_summary_effects(MULTI, combos), atol=1e-12)


def test_multi_benchmark_interval_resamples_each_benchmark_independently():
    tasks = [(np.array(a), np.array(b), labels) for a, b, labels in MULTI]
    rng = np.random.default_rng(3)  # the interval's own draws, made here by hand: benchmark by benchmark
    r1, r2 = rng.integers(0, 3, size=(500, 3)), rng.integers(0, 4, size=(500, 4))
    effects = _brute_summary_effects(MULTI, list(zip(r1.tolist(), r2.tolist())))
    lo, hi = S.multi_task_interval(tasks, draws=500, seed=3)
    assert (lo, hi) == (pytest.approx(np.quantile(effects, 0.025)), pytest.approx(np.quantile(effects, 0.975)))
    # One benchmark: the same as the single-benchmark interval.
    assert S.multi_task_interval(tasks[:1], seed=5) == S.bootstrap_interval(*tasks[0], seed=5)


def test_bootstrap_interval_matches_exact_bootstrap_distribution():
    a = np.array([[1, 1, 0, 1, 1]])
    b = np.array([[0, 1, 0, 0, 1]])
    every = list(itertools.product(range(5), repeat=5))  # each of the 3125 resamples equally likely
    exact = np.sort(_brute_effects(a.tolist(), b.tolist(), None, every))
    lo_exact, hi_exact = exact[int(0.025 * len(exact))], exact[int(0.975 * len(exact))]
    lo, hi = S.bootstrap_interval(a, b, draws=20000, seed=1)
    # The effect takes values k/5; the exact quantiles sit well inside a step, so 20000 draws land on them.
    assert (lo, hi) == (pytest.approx(lo_exact), pytest.approx(hi_exact))
    assert np.mean(exact < lo_exact) < 0.02 and np.mean(exact <= lo_exact) > 0.03


# --- verdicts on hand-made records ---------------------------------------------------------------------------

def _records(arm_values: dict[str, list[float]]) -> list[dict]:
    return [{"grid": "g", "arm": arm, "seed": seed, "eval": {"task": {"top1": v, "mean_per_class_recall": v,
                                                                        "chance_top1": 0.1}}}
            for arm, values in arm_values.items() for seed, v in enumerate(values)]


def _verdict(a, b, claim=S.BEATS, **kw):
    records = _records({"A": a, "B": b})
    return S.compare_paired(S.seed_values(records, "A", "mean_zero_shot_top1"),
                            S.seed_values(records, "B", "mean_zero_shot_top1"), claim, **kw)


def test_clear_win_holds():
    result = _verdict([0.60, 0.62, 0.61, 0.63, 0.60], [0.55, 0.56, 0.56, 0.57, 0.54])
    assert result.verdict == S.HOLDS and result.effect == pytest.approx(0.056)
    assert "holds" in result.text()


def test_clear_loss_does_not_hold():
    assert _verdict([0.50, 0.52, 0.51, 0.50, 0.49], [0.55, 0.56, 0.56, 0.57, 0.54]).verdict == S.FAILS


def test_underpowered_reports_mde():
    # Seeds disagree in sign and spread widely: no test passes, and the MDE is far above the margin.
    result = _verdict([0.60, 0.50, 0.65, 0.52, 0.58], [0.55, 0.56, 0.56, 0.57, 0.54])
    assert result.verdict == S.UNDERPOWERED and result.mde > 0.05 and "MDE" in result.text()
    # Paired: same seeds only; two seeds are the minimum.
    with pytest.raises(LocktuneError, match="at least 2 seeds run by both arms"):
        S.compare_paired({0: 0.5}, {0: 0.4, 1: 0.4})


def test_equivalent_beats_claim_does_not_hold_and_no_worse_claim_holds():
    a = [0.551, 0.560, 0.561, 0.569, 0.541]
    b = [0.550, 0.561, 0.559, 0.570, 0.540]
    assert _verdict(a, b, S.BEATS).verdict == S.FAILS  # equivalent within ±2 pt: no advantage
    result = _verdict(a, b, S.NO_WORSE)
    assert result.verdict == S.HOLDS and result.non_inferiority_p < 0.05


def test_no_worse_than_not_equivalent():
    # Noisy and centred slightly below: the lower bound reaches past -2 pt, so the claim is not confirmed.
    assert _verdict([0.56, 0.50, 0.58, 0.51, 0.55], [0.55, 0.56, 0.56, 0.57, 0.54], S.NO_WORSE).verdict == S.UNDERPOWERED
    # Clearly worse by more than the margin.
    assert _verdict([0.50, 0.52, 0.51, 0.50, 0.49], [0.55, 0.56, 0.56, 0.57, 0.54], S.NO_WORSE).verdict == S.FAILS


def test_bootstrap_interval_can_veto_a_seed_significant_win():
    # Seeds agree (tiny spread) but the benchmark has 10 images: the image interval spans 0 -> not "holds".
    a, b = {0: 0.6, 1: 0.61, 2: 0.6}, {0: 0.5, 1: 0.5, 2: 0.51}
    correct_a = np.array([[1, 1, 1, 1, 1, 1, 0, 0, 0, 0]] * 3)
    correct_b = np.array([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]] * 3)
    assert S.compare_paired(a, b).verdict == S.HOLDS
    vetoed = S.compare_paired(a, b, correct_a=correct_a, correct_b=correct_b)
    assert vetoed.interval[0] <= 0 < vetoed.interval[1] and vetoed.verdict == S.UNDERPOWERED


def test_compare_records_pairs_by_seed_and_names_the_arm_short_of_seeds():
    records = _records({"A": [0.60, 0.62, 0.61], "B": [0.55, 0.56, 0.56]})
    result = S.compare_records(records, "A", "B", "mean_zero_shot_top1")
    d = np.array([0.05, 0.06, 0.05])
    assert result.effect == pytest.approx(d.mean()) and result.t_p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    with pytest.raises(LocktuneError, match="arm 'C': 1 record"):
        S.compare_records(records + _records({"C": [0.5]}), "A", "C", "mean_zero_shot_top1")


def test_a_significant_win_inside_the_margin_holds_but_says_it_is_small():
    # +0.5 pt on every seed (tiny spread): significant and, by equivalence, inside +-2 pt.
    a = {0: 0.605, 1: 0.606, 2: 0.604, 3: 0.605, 4: 0.606}
    b = {0: 0.600, 1: 0.601, 2: 0.599, 3: 0.600, 4: 0.600}
    result = S.compare_paired(a, b)
    assert result.verdict == S.HOLDS and result.tost_p < 0.05 and result.small_but_real
    assert "smaller than the ±2.0 pt margin" in result.text()
    large = S.compare_paired({k: v + 0.05 for k, v in a.items()}, b)
    assert large.verdict == S.HOLDS and not large.small_but_real and "smaller than" not in large.text()
