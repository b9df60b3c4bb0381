"""Statistics for comparing two arms whose seeds are paired (same seed = same data order and head init):
the effect, a paired t-test and an exact sign-flip test over seeds, a per-image bootstrap interval, an
equivalence (TOST) and a non-inferiority test at a stated margin, the minimum detectable effect, and the
verdict rule built on them.  Numpy and the standard library only (scipy is an optional extra).

Two sources of noise are judged separately and a verdict needs both: the seeds (training noise; the
paired t-test over per-seed differences) and the test images (which images happened to be in the
benchmark; the bootstrap interval, when per-image correctness is available).  A summary metric averaged
over several benchmarks (mean zero-shot recall) is bootstrapped by resampling each benchmark's images
independently and averaging the benchmarks' effects (`multi_task_interval`).

The verdict rule, `d` = arm a - arm b on a higher-is-better metric, α = 0.05:
- claim "a beats b": HOLDS when the paired t-test rejects d = 0 with d > 0 (and the bootstrap interval
  lies above 0); DOES NOT HOLD when it rejects with d < 0 (interval below 0), or when the equivalence
  test shows |d| < margin (the claimed advantage is absent); otherwise NOT ENOUGH POWER, with the MDE.
  A significant positive effect that the equivalence test also puts inside the margin still HOLDS (the
  direction is real), and its text says "smaller than the margin" so a reader does not take it as large.
- claim "a is no worse than b": HOLDS only when the non-inferiority test rejects d <= -margin (the
  one-sided 95% lower bound of d, and the bootstrap interval's lower end, are above -margin); DOES NOT
  HOLD when a is significantly worse (the two-sided test rejects with d < 0, interval below 0) and the
  non-inferiority test does not pass; otherwise NOT ENOUGH POWER.  Low power never reads as "holds".
NOT ENOUGH POWER comes with the minimum detectable effect (MDE): the true difference the paired t-test
would detect 80% of the time with this many seeds and this seed-to-seed spread of the differences.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from locktune.ablate.records import metric
from locktune.errors import LocktuneError

ALPHA = 0.05
POWER = 0.8
MARGIN = 0.02  # 2 points of top-1 / mean per-class recall: the smallest difference the study cares about
HOLDS, FAILS, UNDERPOWERED = "holds", "does not hold", "not enough power"
BEATS, NO_WORSE = "beats", "no worse than"


# --- Student's t distribution, from the regularized incomplete beta function --------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for I_x(a, b) (modified Lentz), converges for x < (a + 1) / (a + b + 2)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(dof / 2.0, 0.5, dof / (dof + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(q: float, dof: float) -> float:
    """The t value below which a fraction `q` of Student's t lies (bisection on `t_sf`)."""
    if not 0.0 < q < 1.0:
        raise LocktuneError(f"t quantile: q must be in (0, 1), got {q}")
    if q < 0.5:
        return -t_quantile(1.0 - q, dof)
    lo, hi = 0.0, 1.0
    while t_sf(hi, dof) > 1.0 - q:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_sf(mid, dof) > 1.0 - q else (lo, mid)
    return (lo + hi) / 2.0


# --- tests over seeds -------------------------------------------------------------------------------------

def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> np.ndarray:
    """a[seed] - b[seed] for the seeds both arms ran, in seed order."""
    seeds = sorted(set(a) & set(b))
    return np.array([float(a[s]) - float(b[s]) for s in seeds], dtype=np.float64)


def _mean_se(differences: np.ndarray) -> tuple[float, float]:
    n = len(differences)
    if n < 2:
        raise LocktuneError(f"a paired test needs at least 2 paired seeds, got {n}")
    return float(differences.mean()), float(differences.std(ddof=1) / math.sqrt(n))


def paired_t_test(differences: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test of mean difference 0 over seeds."""
    d = np.asarray(differences, dtype=np.float64)
    mean, se = _mean_se(d)
    if se == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / se
    return t, min(1.0, 2.0 * t_sf(abs(t), len(d) - 1))


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation p over seeds: under 'no difference' each paired difference is
    as likely to have either sign, so all 2^n sign patterns are equally likely.  Assumption-free, but it can
    never go below 2 / 2^n: with 5 seeds or fewer it cannot reach p < 0.05."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) > 16:
        raise LocktuneError(f"sign-flip test: {len(d)} seeds is too many to enumerate (at most 16)")
    observed = abs(d.sum())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    sums = np.abs(signs @ d)
    return float(np.mean(sums >= observed - 1e-12 * max(1.0, observed)))


def tost(differences: Sequence[float], margin: float = MARGIN) -> float:
    """Equivalence p (two one-sided t-tests): small when -margin < mean difference < margin."""
    return max(non_inferiority(differences, margin), non_inferiority(-np.asarray(differences, float), margin))


def non_inferiority(differences: Sequence[float], margin: float = MARGIN) -> float:
    """One-sided p of 'mean difference <= -margin': small when a is no worse than b by more than the margin."""
    d = np.asarray(differences, dtype=np.float64)
    mean, se = _mean_se(d)
    if se == 0.0:
        return 0.0 if mean > -margin else 1.0
    return t_sf((mean + margin) / se, len(d) - 1)


def minimum_detectable_effect(sd: float, seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test over `seeds` paired seeds with spread
    `sd` (sample sd of the differences) detects with probability `power`:
    (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n).  Infinite below 2 seeds."""
    if seeds < 2:
        return math.inf
    dof = seeds - 1
    return (t_quantile(1 - alpha / 2, dof) + t_quantile(power, dof)) * sd / math.sqrt(seeds)


# --- per-image bootstrap ------------------------------------------------------------------------------------

def bootstrap_effects(correct_a: np.ndarray, correct_b: np.ndarray, resamples: np.ndarray,
                      labels: Optional[Sequence[int]] = None, chunk: int = 0) -> np.ndarray:
    """The effect (mean over seeds of score(a) - score(b)) for each image resample.

    correct_*: [seeds, images] per-image correctness (0/1, or any per-image score), seeds paired row by
    row; resamples: [draws, images] image indices.  The same resample is used for both arms and for
    every seed: the benchmark is one draw of images shared by all runs.

    Computed without materialising [draws, seeds, images]: a resample is a count per image, a class's
    image count does not depend on the seed or the arm, so the effect is, per class, the counted sum of
    the seed-mean difference over the counted number of images, averaged over the classes the resample
    holds (accuracy: one class).  `chunk` draws at a time (0: sized to ~4M counts)."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise LocktuneError(f"bootstrap: per-image correctness must be [seeds, images] for both arms, "
                            f"got {a.shape} and {b.shape}")
    n = a.shape[1]
    diff = (a - b).mean(axis=0)  # [images]
    if labels is None:
        members = np.ones((n, 1))
    else:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise LocktuneError(f"bootstrap: {lab.shape[0] if lab.ndim else 0} labels for {n} images")
        members = (lab[:, None] == np.unique(lab)[None, :]).astype(np.float64)  # [images, classes]
    weighted = members * diff[:, None]
    idx = np.asarray(resamples)
    chunk = chunk or max(1, 4_000_000 // max(n, 1))
    out = []
    for start in range(0, len(idx), chunk):
        part = idx[start:start + chunk]
        rows = len(part)
        counts = np.bincount((np.arange(rows)[:, None] * n + part).ravel(), minlength=rows * n)
        counts = counts.reshape(rows, n).astype(np.float64)
        hits, sizes = counts @ weighted, counts @ members  # [rows, classes]
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(sizes > 0, hits / np.maximum(sizes, 1), np.nan)
        out.append(np.nanmean(recall, axis=1))
    return np.concatenate(out) if out else np.zeros(0)


# One benchmark's per-image data for both arms: (correct_a [seeds, images], correct_b, labels or None).
TaskImages = tuple[np.ndarray, np.ndarray, Optional[Sequence[int]]]


def multi_task_effects(tasks: Sequence[TaskImages], resamples: Sequence[np.ndarray]) -> np.ndarray:
    """The effect on a summary metric that is the mean over several benchmarks of each one's score (e.g.
    mean zero-shot recall), per draw: each benchmark resampled by its own `resamples[t]` ([draws, images_t],
    the same for both arms and every seed), its effect computed as in `bootstrap_effects`, then averaged
    over the benchmarks (the mean over seeds and over benchmarks commute: both are plain means)."""
    if not tasks or len(tasks) != len(resamples):
        raise LocktuneError(f"bootstrap: {len(tasks)} benchmarks and {len(resamples)} resample sets")
    return np.mean([bootstrap_effects(a, b, r, labels) for (a, b, labels), r in zip(tasks, resamples)], axis=0)


def multi_task_interval(tasks: Sequence[TaskImages], draws: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the summary effect over `draws` resamples, every benchmark's images resampled
    independently (with replacement), from one generator in the benchmarks' order."""
    rng = np.random.default_rng(seed)
    resamples = []
    for a, _, _ in tasks:
        n_images = np.asarray(a).shape[-1]
        resamples.append(rng.integers(0, n_images, size=(draws, n_images)))
    effects = multi_task_effects(tasks, resamples)
    tail = (1 - level) / 2
    return float(np.quantile(effects, tail)), float(np.quantile(effects, 1 - tail))


def bootstrap_interval(correct_a: np.ndarray, correct_b: np.ndarray, labels: Optional[Sequence[int]] = None,
                       draws: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the effect over `draws` image resamples (with replacement)."""
    return multi_task_interval([(correct_a, correct_b, labels)], draws, level, seed)


# --- one comparison and its verdict -------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """Arm a against arm b on one higher-is-better metric, seeds paired."""

    claim: str  # BEATS or NO_WORSE
    effect: float  # mean over seeds of a - b
    seeds: int
    sd: float  # sample sd of the paired differences
    t_p: float  # paired t-test, two-sided
    sign_flip_p: float  # exact sign-flip test, two-sided
    tost_p: float  # equivalence within +-margin
    non_inferiority_p: float  # a no worse than b by more than the margin
    mde: float  # minimum detectable effect at POWER, ALPHA
    margin: float
    interval: Optional[tuple[float, float]]  # per-image bootstrap 95% interval of the effect
    verdict: str

    def text(self, scale: float = 100.0, unit: str = "pt", digits: int = 1) -> str:
        f = lambda x: f"{scale * x:+.{digits}f}"  # noqa: E731
        g = lambda x: f"{scale * x:.{digits}f}"  # noqa: E731
        interval = "" if self.interval is None else f", 95% image interval [{f(self.interval[0])}, {f(self.interval[1])}]"
        return (f"effect {f(self.effect)} {unit} over {self.seeds} paired seeds{interval}; "
                f"paired t p={self.t_p:.3f}, sign-flip p={self.sign_flip_p:.3f}, "
                + (f"non-inferiority p={self.non_inferiority_p:.3f} at -{g(self.margin)} {unit}, "
                   if self.claim == NO_WORSE else f"equivalence p={self.tost_p:.3f} at ±{g(self.margin)} {unit}, ")
                + f"MDE {g(self.mde)} {unit}: {self.verdict}"
                + (f" (a real effect, but smaller than the ±{g(self.margin)} {unit} margin)"
                   if self.small_but_real else ""))

    @property
    def small_but_real(self) -> bool:
        """A 'beats' claim that holds while the equivalence test puts the effect inside the margin."""
        return self.claim == BEATS and self.verdict == HOLDS and self.tost_p < ALPHA


def compare_paired(a: Mapping[int, float], b: Mapping[int, float], claim: str = BEATS, margin: float = MARGIN,
                   correct_a: Optional[np.ndarray] = None, correct_b: Optional[np.ndarray] = None,
                   labels: Optional[Sequence[int]] = None, alpha: float = ALPHA,
                   tasks: Optional[Sequence[TaskImages]] = None) -> Comparison:
    """Compare arm a with arm b: per-seed metric values {seed: value}, and optionally per-image correctness
    [seeds, images] (rows in the order of the paired seeds) for the bootstrap interval, or `tasks` (one
    such triple per benchmark) for a summary metric averaged over several benchmarks."""
    if claim not in (BEATS, NO_WORSE):
        raise LocktuneError(f"unknown claim '{claim}'; valid: {BEATS}, {NO_WORSE}")
    d = paired_differences(a, b)
    if len(d) < 2:
        raise LocktuneError(f"comparison needs at least 2 seeds run by both arms, got {len(d)} "
                            f"(a: {sorted(a)}, b: {sorted(b)}); run more seeds")
    if tasks:
        interval = multi_task_interval(tasks)
    else:
        interval = None if correct_a is None or correct_b is None else bootstrap_interval(correct_a, correct_b, labels)
    sd = float(d.std(ddof=1))
    _, t_p = paired_t_test(d)
    result = dict(claim=claim, effect=float(d.mean()), seeds=len(d), sd=sd, t_p=t_p, sign_flip_p=sign_flip_p(d),
                  tost_p=tost(d, margin), non_inferiority_p=non_inferiority(d, margin),
                  mde=minimum_detectable_effect(sd, len(d), alpha), margin=margin, interval=interval)
    return Comparison(**result, verdict=decide(**result, alpha=alpha))


def decide(claim: str, effect: float, t_p: float, tost_p: float, non_inferiority_p: float, margin: float,
           interval: Optional[tuple[float, float]], alpha: float = ALPHA, **_) -> str:
    """The verdict rule of this module's docstring."""
    lo, hi = interval if interval is not None else (-math.inf, math.inf)
    better = t_p < alpha and effect > 0 and (interval is None or lo > 0)
    worse = t_p < alpha and effect < 0 and (interval is None or hi < 0)
    if claim == NO_WORSE:
        if non_inferiority_p < alpha and (interval is None or lo > -margin):
            return HOLDS
        return FAILS if worse else UNDERPOWERED
    if better:
        return HOLDS
    if worse:
        return FAILS
    if tost_p < alpha and (interval is None or (lo > -margin and hi < margin)):
        return FAILS  # equivalent within the margin: the claimed advantage is not there
    return UNDERPOWERED


def seed_values(records: list[dict], arm: str, key: str) -> dict[int, float]:
    """{seed: metric} of one arm's records, for `compare_paired`."""
    out = {}
    for r in records:
        if r["arm"] == arm and (value := metric(r, key)) is not None:
            out[int(r["seed"])] = value
    return out


def compare_records(records: list[dict], a: str, b: str, key: str, claim: str = BEATS,
                    margin: float = MARGIN) -> Comparison:
    """`compare_paired` on two arms' records (a record key such as `mean_zero_shot_top1`), seeds paired by
    their seed number; one-line error naming the arm when it has too few seeds."""
    values_a, values_b = seed_values(records, a, key), seed_values(records, b, key)
    for arm, values in ((a, values_a), (b, values_b)):
        if len(values) < 2:
            raise LocktuneError(f"arm '{arm}': {len(values)} record(s) with '{key}'; a paired comparison needs at "
                                f"least 2 seeds (add seeds to the grid)")
    return compare_paired(values_a, values_b, claim, margin)
