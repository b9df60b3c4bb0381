"""The pre-registered verdict rule of the studies (issue 29, round 3): one rule for every registered
comparison, judged as a family.  Stated in docs/studies/index.md ("The verdict rule") before the grids
rerun; `statistics.py` supplies the t distribution, TOST and the per-image bootstrap it builds on.

A study registers a family of comparisons before it runs, each "a beats b" (BEATS) or "a is no worse than
b within the margin" (NO_WORSE) on one higher-is-better metric, seeds paired; `d` = a - b per seed.
- Fewer than MIN_SEEDS (5) paired seeds: "not enough seeds", never a verdict.  It still counts in the
  family's size (with p = 1), so dropping a comparison cannot loosen the correction for the others.
- Each comparison's claim is tested one-sided twice: the paired t-test and the exact sign-flip
  (permutation) test over seeds, BEATS on d > 0, NO_WORSE on d + margin > 0.  Both must reject, so the
  comparison's p is the larger of the two (an intersection-union test: level alpha without assuming
  normality for the sign-flip half, without the sign-flip's coarseness deciding alone).
- The family's p values are adjusted by Holm's step-down method (family-wise error): each finding is read
  on its own, so the chance that any one "holds" is false must be at most alpha, not only the expected
  share of false ones (Benjamini-Hochberg, available as `CORRECTIONS["bh"]`, controls only that share).
- HOLDS when the adjusted claim p < alpha.  DOES NOT HOLD when the opposite is shown the same way (both
  one-sided tests of d < 0 for BEATS, of d < -margin for NO_WORSE, Holm-adjusted over the family), or,
  for BEATS, when TOST puts d within +-margin (LEVEL, Holm-adjusted): the claimed advantage is absent.
  "level" is only ever said from TOST at the stated margin.  Otherwise NOT ENOUGH POWER, with the minimum
  detectable effect: the true d a one-sided paired t-test at the first Holm step's level alpha / m finds
  with 80% power, from the noncentral t.
- The headline interval is seed-level: the 95% t interval over the per-seed differences; where per-image
  outcomes are recorded, a hierarchical bootstrap (seeds resampled, then each benchmark's images) and the
  per-image interval (images only, seeds fixed) are shown beside it.  The per-image interval ignores seed
  noise and is never the headline.
Because the exact one-sided sign-flip p is at least 2^-n, a family of m comparisons can have any "holds"
only with n >= `seeds_needed(m)` seeds (5 for one comparison, 7 for 6, 9 for 19).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from locktune.ablate.statistics import (BEATS, FAILS, HOLDS, MARGIN, NO_WORSE, UNDERPOWERED, TaskImages,
                                        multi_task_interval, paired_differences, t_quantile, t_sf)
from locktune.errors import LocktuneError
from locktune.extras import require_extra

ALPHA = 0.05
POWER = 0.8
MIN_SEEDS = 5
CORRECTION = "holm"
NOT_ENOUGH_SEEDS = "not enough seeds"
MAX_ENUMERATED = 20  # seeds: 2^20 sign patterns, enumerated in chunks


# --- one-sided tests over seeds ------------------------------------------------------------------------------

def sign_flip_greater(differences: Sequence[float]) -> float:
    """Exact one-sided sign-flip p of 'mean difference > 0': the share of the 2^n sign patterns of the
    differences whose sum is at least the observed sum.  At least 2^-n (5 all-positive seeds: 1/32)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) > MAX_ENUMERATED:
        raise LocktuneError(f"sign-flip test: {len(d)} seeds is too many to enumerate (at most {MAX_ENUMERATED})")
    if len(d) == 0:
        return 1.0
    observed = d.sum()
    tolerance = 1e-12 * max(1.0, float(np.abs(d).sum()))
    magnitudes, count, at_least = np.abs(d), 1 << len(d), 0
    bits = np.arange(len(d))
    for start in range(0, count, 1 << 16):
        patterns = np.arange(start, min(count, start + (1 << 16)))[:, None]
        signs = 1.0 - 2.0 * ((patterns >> bits) & 1)  # bit set: that difference flipped
        at_least += int(np.sum(signs @ magnitudes >= observed - tolerance))
    return at_least / count


def t_greater(differences: Sequence[float]) -> float:
    """One-sided paired t-test p of 'mean difference > 0' (n - 1 degrees of freedom)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return 1.0
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    if se == 0.0:
        return 0.0 if mean > 0 else 1.0
    return t_sf(mean / se, len(d) - 1)


def both_greater(differences: Sequence[float]) -> tuple[float, float, float]:
    """(t p, sign-flip p, the larger: the p of 'both tests reject') for 'mean difference > 0'."""
    t_p, flip_p = t_greater(differences), sign_flip_greater(differences)
    return t_p, flip_p, max(t_p, flip_p)


# --- multiplicity over the registered family ---------------------------------------------------------------------

def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p values (family-wise error): the k-th smallest times (m - k + 1), made
    non-decreasing in that order, capped at 1."""
    p = [float(x) for x in pvalues]
    m, out, running = len(p), [1.0] * len(p), 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg step-up adjusted p values (false discovery rate): the k-th smallest times m / k,
    made non-increasing from the largest down, capped at 1."""
    p = [float(x) for x in pvalues]
    m, out, running = len(p), [1.0] * len(p), 1.0
    for rank, i in reversed(list(enumerate(sorted(range(m), key=lambda j: p[j])))):
        running = min(running, m * p[i] / (rank + 1))
        out[i] = min(1.0, running)
    return out


CORRECTIONS: dict[str, Callable[[Sequence[float]], list[float]]] = {"holm": holm, "bh": benjamini_hochberg}


def seeds_needed(family_size: int, alpha: float = ALPHA) -> int:
    """The fewest paired seeds with which any comparison of a Holm family of `family_size` can hold: the
    exact one-sided sign-flip p is at least 2^-n and Holm's first step needs p <= alpha / m (never fewer
    than MIN_SEEDS)."""
    return max(MIN_SEEDS, math.ceil(math.log2(max(family_size, 1) / alpha) - 1e-12))


# --- intervals ------------------------------------------------------------------------------------------------------

def t_interval(differences: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The t interval of the mean per-seed difference (seed-level: seeds are the sampling unit)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return -math.inf, math.inf
    half = t_quantile(0.5 + level / 2, len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return float(d.mean()) - half, float(d.mean()) + half


def hierarchical_effects(tasks: Sequence[TaskImages], draws: int = 2000, seed: int = 0,
                         chunk: int = 0) -> np.ndarray:
    """The effect for each of `draws` two-level resamples: the paired seeds resampled with replacement
    (the same seeds for both arms), then each benchmark's images resampled with replacement (the same
    images for both arms and every seed); a benchmark's effect is the mean over the drawn seeds of
    score(a) - score(b) (mean per-class recall with labels, else accuracy), averaged over benchmarks.
    One generator: the seed draw, then each benchmark's image draw, per resample.

    The draws are taken in that order, one resample at a time; the arithmetic is done `chunk` resamples
    at a time (0: sized to ~4M counts) on counts, as in `bootstrap_effects`: a drawn seed or image is a
    count, so the seed-mean difference is the seed counts times the per-seed differences, and a class's
    recall difference is the image-counted sum of it over the counted images of that class, averaged over
    the classes the resample holds."""
    if not tasks:
        raise LocktuneError("hierarchical bootstrap: no benchmarks given")
    n_seeds = np.asarray(tasks[0][0]).shape[0]
    if any(np.asarray(a).shape[0] != n_seeds or np.asarray(b).shape != np.asarray(a).shape for a, b, _ in tasks):
        raise LocktuneError("hierarchical bootstrap: every benchmark needs [seeds, images] outcomes for the "
                            "same paired seeds in both arms")
    differences, members = [], []
    for a, b, labels in tasks:
        d = np.asarray(a, np.float64) - np.asarray(b, np.float64)  # [seeds, images]
        if labels is None:
            members.append(np.ones((d.shape[1], 1)))
        else:
            lab = np.asarray(labels)
            if lab.shape != (d.shape[1],):
                raise LocktuneError(f"hierarchical bootstrap: {lab.shape[0] if lab.ndim else 0} labels for "
                                    f"{d.shape[1]} images")
            members.append((lab[:, None] == np.unique(lab)[None, :]).astype(np.float64))  # [images, classes]
        differences.append(d)
    rng = np.random.default_rng(seed)
    seed_draws = np.zeros((draws, n_seeds), dtype=np.int64)
    image_draws = [np.zeros((draws, d.shape[1]), dtype=np.int64) for d in differences]
    for k in range(draws):  # the generator's order: seeds, then each benchmark's images, per resample
        seed_draws[k] = rng.integers(0, n_seeds, size=n_seeds)
        for t, d in enumerate(differences):
            image_draws[t][k] = rng.integers(0, d.shape[1], size=d.shape[1])
    seed_counts = _counts(seed_draws, n_seeds)  # [draws, seeds]
    effects = np.zeros(draws)
    for d, member, drawn in zip(differences, members, image_draws):
        n = d.shape[1]
        step = chunk or max(1, 4_000_000 // max(n, 1))
        for start in range(0, draws, step):
            rows = slice(start, start + step)
            diff = seed_counts[rows] @ d / n_seeds  # [rows, images]: the seed-mean difference per image
            counts = _counts(drawn[rows], n)  # [rows, images]
            hits, sizes = (counts * diff) @ member, counts @ member  # [rows, classes]
            with np.errstate(invalid="ignore", divide="ignore"):
                recall = np.where(sizes > 0, hits / np.maximum(sizes, 1), np.nan)
            effects[rows] += np.nanmean(recall, axis=1)
    return effects / len(differences)


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """[rows, n] how often each index was drawn in each row of `draws` ([rows, size] indices below n)."""
    rows = draws.shape[0]
    flat = (np.arange(rows)[:, None] * n + draws).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def hierarchical_interval(tasks: Sequence[TaskImages], draws: int = 2000, level: float = 0.95,
                          seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `hierarchical_effects`: seed noise and image noise together."""
    effects = hierarchical_effects(tasks, draws, seed)
    tail = (1 - level) / 2
    return float(np.quantile(effects, tail)), float(np.quantile(effects, 1 - tail))


# --- power -----------------------------------------------------------------------------------------------------------

def power_one_sided(effect: float, sd: float, seeds: int, alpha: float) -> float:
    """Exact power of the one-sided paired t-test at level `alpha` for a true mean difference `effect`
    with per-seed spread `sd`: P(T' > t_{1-alpha, n-1}), T' noncentral t with n - 1 degrees of freedom and
    noncentrality effect * sqrt(n) / sd (scipy.stats.nct)."""
    require_extra("local-benchmarks", "the noncentral t power of the verdict rule")
    from scipy import stats

    dof = seeds - 1
    return float(stats.nct.sf(stats.t.ppf(1 - alpha, dof), dof, effect * math.sqrt(seeds) / sd))


def minimum_detectable_effect(sd: float, seeds: int, alpha: float, power: float = POWER) -> float:
    """The smallest true mean difference the one-sided paired t-test at level `alpha` detects with
    probability `power`, solved on the noncentral t.  Infinite below 2 seeds; 0 when the seeds agree exactly."""
    if seeds < 2:
        return math.inf
    if sd == 0.0:
        return 0.0
    require_extra("local-benchmarks", "the minimum detectable effect of the verdict rule")
    from scipy.optimize import brentq

    high = sd
    while power_one_sided(high, sd, seeds, alpha) < power:
        high *= 2.0
    return float(brentq(lambda e: power_one_sided(e, sd, seeds, alpha) - power, 0.0, high, xtol=1e-12 * sd))


# --- the family ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Registered:
    """One registered comparison: per-seed values of arms a and b ({seed: value}, higher is better), and
    optionally per-benchmark per-image outcomes ([seeds, images] per arm, rows in the paired seeds' order)."""

    name: str
    claim: str  # BEATS or NO_WORSE
    a: Mapping[int, float]
    b: Mapping[int, float]
    margin: float = MARGIN
    tasks: Optional[Sequence[TaskImages]] = field(default=None, compare=False)


@dataclass(frozen=True)
class Judged:
    name: str
    claim: str
    verdict: str  # HOLDS | FAILS | UNDERPOWERED | NOT_ENOUGH_SEEDS
    seeds: int
    effect: float
    sd: float
    margin: float
    t_p: float  # one-sided, in the claim's direction
    sign_flip_p: float  # exact, one-sided, in the claim's direction
    p: float  # the larger of the two
    p_adjusted: float  # over the family
    against_p_adjusted: float  # the opposite shown by both tests, adjusted over the family
    tost_p_adjusted: float  # equivalence within +-margin, adjusted over the family
    level: bool  # TOST: within +-margin
    mde: float  # at the first Holm step's level alpha / m, POWER, one-sided
    seed_interval: tuple[float, float]  # headline: 95% t interval over seeds
    hierarchical_interval: Optional[tuple[float, float]]  # seeds then images
    image_interval: Optional[tuple[float, float]]  # images only, seeds fixed
    family_size: int

    def text(self, scale: float = 100.0, unit: str = "pt", digits: int = 1) -> str:
        """One line for a report: effect, intervals, the tests, the adjusted p, MDE and verdict."""
        def interval(name: str, bounds: Optional[tuple[float, float]]) -> str:
            return "" if bounds is None else f", {name} [{scale * bounds[0]:+.{digits}f}, {scale * bounds[1]:+.{digits}f}]"
        if self.verdict == NOT_ENOUGH_SEEDS:
            return (f"{self.seeds} paired seed(s), the rule needs {MIN_SEEDS}: {NOT_ENOUGH_SEEDS}"
                    + ("" if self.seeds == 0 else f" (effect {scale * self.effect:+.{digits}f} {unit})"))
        head = (f"effect {scale * self.effect:+.{digits}f} {unit} over {self.seeds} paired seeds"
                + interval("95% seed interval", self.seed_interval)
                + interval("hierarchical", self.hierarchical_interval) + interval("per-image", self.image_interval))
        what = (f"non-inferiority at -{scale * self.margin:.{digits}f} {unit}: " if self.claim == NO_WORSE else "")
        tests = (f"{what}one-sided t p={self.t_p:.3f}, sign-flip p={self.sign_flip_p:.3f}, "
                 f"{CORRECTION.title()}-adjusted p={self.p_adjusted:.3f} over {self.family_size}")
        if self.claim == BEATS:
            tests += f"; equivalence (TOST) at ±{scale * self.margin:.{digits}f} {unit}, adjusted p={self.tost_p_adjusted:.3f}"
        tail = f"MDE {scale * self.mde:.{digits}f} {unit}" if math.isfinite(self.mde) else "MDE infinite"
        if not math.isfinite(self.mde) and 2.0 ** -self.seeds > ALPHA / self.family_size:
            tail += f" ({self.seeds} seeds cannot reach p < {ALPHA}/{self.family_size} by sign flips)"
        level = f"; level within ±{scale * self.margin:.{digits}f} {unit} (TOST)" if self.level else ""
        small = (f" (a real effect, but within the ±{scale * self.margin:.{digits}f} {unit} margin)"
                 if self.verdict == HOLDS and self.claim == BEATS and self.level else "")
        return f"{head}; {tests}; {tail}{level}: {self.verdict}{small}"


def _check(registered: Registered) -> None:
    if registered.claim not in (BEATS, NO_WORSE):
        raise LocktuneError(f"comparison '{registered.name}': unknown claim '{registered.claim}'; "
                            f"valid: {BEATS}, {NO_WORSE}")
    if not registered.margin > 0:
        raise LocktuneError(f"comparison '{registered.name}': margin must be > 0, got {registered.margin}")


def judge_family(family: Sequence[Registered], alpha: float = ALPHA, correction: str = CORRECTION,
                 draws: int = 2000) -> list[Judged]:
    """Judge every registered comparison of one family by the rule of this module's docstring, in order."""
    if correction not in CORRECTIONS:
        raise LocktuneError(f"unknown multiplicity correction '{correction}'; valid: {', '.join(CORRECTIONS)}")
    if len({r.name for r in family}) != len(family):
        raise LocktuneError("registered family: two comparisons share a name; give each its own")
    m = len(family)
    rows = []
    for registered in family:
        _check(registered)
        d = paired_differences(registered.a, registered.b)
        shift = registered.margin if registered.claim == NO_WORSE else 0.0
        enough = len(d) >= MIN_SEEDS
        claim = both_greater(d + shift) if enough else (1.0, 1.0, 1.0)
        against = both_greater(-(d + shift))[2] if enough else 1.0
        tost = max(t_greater(d + registered.margin), t_greater(registered.margin - d)) if enough else 1.0
        rows.append((registered, d, claim, against, tost))
    adjust = CORRECTIONS[correction]
    claim_adj = adjust([row[2][2] for row in rows])
    against_adj = adjust([row[3] for row in rows])
    tost_adj = adjust([row[4] for row in rows])
    out = []
    for k, (registered, d, (t_p, flip_p, p), _, _) in enumerate(rows):
        seeds = len(d)
        sd = float(d.std(ddof=1)) if seeds >= 2 else math.nan
        level = seeds >= MIN_SEEDS and tost_adj[k] < alpha
        if seeds < MIN_SEEDS:
            verdict = NOT_ENOUGH_SEEDS
        elif claim_adj[k] < alpha:
            verdict = HOLDS
        elif against_adj[k] < alpha or (registered.claim == BEATS and level):
            verdict = FAILS
        else:
            verdict = UNDERPOWERED
        floor_too_high = 2.0 ** -seeds > alpha / m
        mde = math.inf if seeds < MIN_SEEDS or floor_too_high else minimum_detectable_effect(sd, seeds, alpha / m)
        tasks = registered.tasks if seeds >= MIN_SEEDS else None
        out.append(Judged(
            name=registered.name, claim=registered.claim, verdict=verdict, seeds=seeds,
            effect=float(d.mean()) if seeds else math.nan, sd=sd, margin=registered.margin, t_p=t_p,
            sign_flip_p=flip_p, p=p, p_adjusted=claim_adj[k], against_p_adjusted=against_adj[k],
            tost_p_adjusted=tost_adj[k], level=level, mde=mde, seed_interval=t_interval(d),
            hierarchical_interval=hierarchical_interval(tasks, draws) if tasks else None,
            image_interval=multi_task_interval(tasks, draws) if tasks else None, family_size=m))
    return out


def registered_from_records(records: list[dict], name: str, a: str, b: str,
                            value: Callable[[dict], Optional[float]], claim: str = BEATS, margin: float = MARGIN,
                            lower_is_better: bool = False) -> Registered:
    """A registered comparison from a grid's records ({"arm", "seed", ...}): `value(record)` per seed for
    arms a and b (negated when lower is better, so that the rule always reads higher as better)."""
    sign = -1.0 if lower_is_better else 1.0

    def per_seed(arm: str) -> dict[int, float]:
        values = {}
        for record in records:
            if record["arm"] == arm and (v := value(record)) is not None:
                values[int(record["seed"])] = sign * float(v)
        return values

    return Registered(name, claim, per_seed(a), per_seed(b), margin)
