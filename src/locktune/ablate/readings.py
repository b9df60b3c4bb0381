"""Readings whose numbers cannot drift from the records: a grid file's `reading:` sentences are templates,
and every number they quote is a placeholder filled in from the grid's arm records (and the comparisons
`findings.py` draws from them) when the report is written.  A sentence is the author's; its numbers never are.

A placeholder is `{kind:argument:...}`; an optional last part `.N` sets the number of decimals.

Over an arm's records (ARM is an arm name; KEY a record key as `records.metric` reads it, e.g.
`mean_zero_shot_recall`, `validation_R@1`, `ood_loss|train_loss`, `train|final_loss`):
    {metric:ARM:KEY}      mean over seeds, shown as the tables show it (percentages with 1 decimal; losses
                          with 3; seconds with 0), without a unit
    {range:ARM:KEY}       lowest-highest over seeds, same format ("5.1-5.3" with `.1`)
    {seeds:ARM}           how many seeds the arm has
    {config:ARM:a.b}      the arm's run config value (e.g. train.lr, model.logit_scale_init), the same at every seed
    {steps:ARM}           training steps (an arm on a wall-clock budget: the calibrated steps)
    {pairs:ARM}           training pairs (after the validation hold-out and any cap)
    {pairs_seen:ARM}      steps x batch size
    {passes:ARM}          pairs seen / training pairs, 1 decimal ("4", "1.3", "0.4")
    {budget:ARM}          the wall-clock budget in seconds of an arm trained on one

Over one paired comparison, C: a finding with one comparison (`equal_compute_lu_beats_uu`), one of a
finding's comparisons picked by its arms (`locked_text_at_bottom:LL vs UU`; naming the arms in the other
order flips the sign) or by its place in the finding (`uu_overfits_training_distribution:2`, the second; for two
comparisons of the same arms on different metrics), or a comparison the grid does not register, on a record key (`UU vs LU:validation_R@1`;
paired by seed like the registered ones).  Effects are a - b, better-is-positive, in points (x100, 1 decimal)
or, for a loss, nats (3 decimals; a lower loss is a lead); no unit is printed:
    {effect:C}  {seed_differences:C} ("+2.8, +5.9, +7.6")  {ahead:C} ("2 of 3")
    {seed_interval:C} (the 95% t interval over seeds, "[+4.3, +6.7]")  {interval:C} (the per-image bootstrap
    interval, seeds fixed: test-image noise only)
    {p:C} (paired t, two-sided)  {sign_flip_p:C}  {tost_p:C}  {non_inferiority_p:C}  (3 decimals, the comparison
    alone)  {p_adjusted:C} (the verdict rule's: both one-sided tests, Holm-adjusted over the grid's family)
    {mde:C}  {mde_at:C:N} (the MDE N seeds would give at this spread): the verdict rule's, one-sided paired t at
    0.05 / (the family's size), 80% power, from the noncentral t
    {margin:C}  {verdict:C} (the verdict rule's, within the grid's family)  {seeds:C}
A comparison named as `A vs B:KEY` is judged as a family of one.

A placeholder that names a missing finding, arm, metric or kind is a LocktuneError naming the grid file,
the finding and the placeholder (`check`, when the grid loads, for what needs no record).  Records that
cannot fill a sound placeholder (a smoke run, a grid still running) raise `Unfilled`, and the report prints
why in the reading's place rather than a sentence with holes.  So is a digit typed outside a placeholder (`typed_numbers`): the only
digits a sentence may carry itself are those that are part of an arm's name (batch 16 of `softmax-16`, the
1k of `LU-1k`: the design's labels) and metric names (R@1).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional

from locktune.ablate.findings import FINDINGS, Metric, Outcome, Test, Verdict, _Missing, judged_outcomes, run_test
from locktune.ablate.grid import Grid
from locktune.ablate.records import metric
from locktune.ablate.statistics import multi_task_interval
from locktune.ablate.verdict import ALPHA, minimum_detectable_effect, t_interval
from locktune.errors import LocktuneError

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
DECIMALS = re.compile(r"^\.(\d)$")
METRIC_NAMES = {"R@1", "R@5", "R@10"}  # digits that are part of a metric's name, not a measurement


class _Bad(Exception):
    """A placeholder that cannot be filled: args[0] says why."""


# --- numbers over an arm's records ----------------------------------------------------------------------------

def _arm(records: list[dict], arm: str) -> list[dict]:
    rows = [r for r in records if r["arm"] == arm]
    if not rows:
        raise _Bad(f"arm '{arm}' has no record; arms with records: {', '.join(sorted({r['arm'] for r in records}))}")
    return rows


def _values(records: list[dict], arm: str, key: str) -> list[float]:
    values = [metric(r, key) for r in _arm(records, arm)]
    if any(v is None for v in values):
        raise _Bad(f"arm '{arm}' has no metric '{key}' in every record")
    return values


def _shown(key: str, value: float, decimals: Optional[int]) -> str:
    """A record value as the report's tables show it (`report.cell`), without its unit."""
    if key == "train|seconds":
        return f"{value:.{0 if decimals is None else decimals}f}"
    if "loss" in key:
        return f"{value:.{3 if decimals is None else decimals}f}"
    return f"{100 * value:.{1 if decimals is None else decimals}f}"


def _same(records: list[dict], arm: str, what: str, value: Callable[[dict], object]):
    """One value every seed of the arm shares (a setting, not a measurement that varies by seed)."""
    try:
        seen = {repr(value(r)): value(r) for r in _arm(records, arm)}
    except (KeyError, TypeError):
        raise _Bad(f"arm '{arm}' has records without {what}") from None
    if len(seen) != 1:
        raise _Bad(f"arm '{arm}' has different {what} across its seeds: {sorted(seen)}")
    return next(iter(seen.values()))


def _config(record: dict, path: str):
    node = record.get("config", {})
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise _Bad(f"the records have no config value '{path}'")
        node = node[part]
    return node


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:g}"


def _steps(records: list[dict], arm: str) -> int:
    return int(_same(records, arm, "steps", lambda r: r["train"]["steps"]))


def _pairs(records: list[dict], arm: str) -> int:
    return int(_same(records, arm, "training pairs", lambda r: r["train"]["run"]["training_pairs"]))


def _pairs_seen(records: list[dict], arm: str) -> int:
    return _steps(records, arm) * int(_same(records, arm, "batch size", lambda r: _config(r, "train.batch_size")))


def _passes(records: list[dict], arm: str) -> str:
    return f"{_pairs_seen(records, arm) / _pairs(records, arm):.1f}".removesuffix(".0")


def _budget(records: list[dict], arm: str) -> str:
    budget = _same(records, arm, "budget", lambda r: (r.get("calibration") or {}).get("budget_s"))
    if budget is None:
        raise _Bad(f"arm '{arm}' was not trained on a wall-clock budget")
    return f"{budget:g}"


def _arm_value(kind: str, args: list[str], records: list[dict], decimals: Optional[int]) -> str:
    need = {"metric": 2, "range": 2, "config": 2}.get(kind, 1)
    if len(args) != need:
        raise _Bad(f"'{kind}' takes {need} argument(s) ({'ARM:KEY' if need == 2 else 'ARM'}), got {len(args)}")
    arm = args[0]
    if kind == "metric":
        values = _values(records, arm, args[1])
        return _shown(args[1], sum(values) / len(values), decimals)
    if kind == "range":
        values = _values(records, arm, args[1])
        return f"{_shown(args[1], min(values), decimals)}-{_shown(args[1], max(values), decimals)}"
    if kind == "config":
        return _number(_same(records, arm, f"config '{args[1]}'", lambda r: _config(r, args[1])))
    if kind == "seeds":
        return str(len(_arm(records, arm)))
    simple = {"steps": lambda: _number(_steps(records, arm)), "pairs": lambda: _number(_pairs(records, arm)),
              "pairs_seen": lambda: _number(_pairs_seen(records, arm)), "passes": lambda: _passes(records, arm),
              "budget": lambda: _budget(records, arm)}
    return simple[kind]()


# --- numbers over one paired comparison --------------------------------------------------------------------------

def _arms(text: str) -> tuple[str, str]:
    a, _, b = text.partition(" vs ")
    if not b:
        raise _Bad(f"'{text}' should name two arms as 'A vs B'")
    return a.strip(), b.strip()


def _outcome(args: list[str], records: list[dict], memo: dict) -> tuple[Outcome, float]:
    """The comparison a placeholder names, and the sign that turns its effect into `a - b` as named.  A
    registered comparison is judged within the family of `memo["family"]` (the grid's findings), once per
    sentence (`memo`); its per-image outcomes are kept for {interval}, never bootstrapped for the verdict."""
    try:
        if args[0] in FINDINGS.names():
            if "judged" not in memo:
                family = list(memo.get("family") or [args[0]])
                memo["judged"] = judged_outcomes(family if args[0] in family else [*family, args[0]], records,
                                                 images=False)
            outcomes = memo["judged"].get(args[0])
            if outcomes is None:  # a finding outside the family the memo was judged for
                outcomes = judged_outcomes([args[0]], records, images=False)[args[0]]
            if isinstance(outcomes, Verdict):
                raise _Bad(outcomes.measured)
            if len(args) == 1:
                if len(outcomes) != 1:
                    raise _Bad(f"finding '{args[0]}' has {len(outcomes)} comparisons; pick one as "
                               f"'{args[0]}:A vs B' ({', '.join(f'{o.test.a} vs {o.test.b}' for o in outcomes)})")
                return outcomes[0], 1.0
            if args[1].isdigit():  # the N-th comparison, where two compare the same arms on different metrics
                if not 1 <= int(args[1]) <= len(outcomes):
                    raise _Bad(f"finding '{args[0]}' has {len(outcomes)} comparisons, not {args[1]}")
                return outcomes[int(args[1]) - 1], 1.0
            a, b = _arms(args[1])
            for wanted, sign in (((a, b), 1.0), ((b, a), -1.0)):  # the comparison's own order first
                for outcome in outcomes:
                    if (outcome.test.a, outcome.test.b) == wanted:
                        return outcome, sign
            raise _Bad(f"finding '{args[0]}' has no comparison of {a} and {b}; its comparisons: "
                       f"{', '.join(f'{o.test.a} vs {o.test.b}' for o in outcomes)}")
        if len(args) != 2 or " vs " not in args[0]:
            raise _Bad(f"'{args[0]}' is neither a finding nor 'A vs B:KEY'")
        a, b = _arms(args[0])
        for arm in (a, b):
            _values(records, arm, args[1])
        loss = "loss" in args[1]
        test = Test(a, b, Metric(args[1], args[1], lambda r: metric(r, args[1]), lower_is_better=loss, loss=loss))
        key = ("adhoc", args[0], args[1])
        if key not in memo:
            memo[key] = run_test(records, test, images=False)
        return memo[key], 1.0
    except _Missing as missing:
        raise _Bad(missing.args[1] if len(missing.args) > 1 else f"arm '{missing.args[0]}' has no record") from None


ARM_KINDS = {"metric", "range", "config", "seeds", "steps", "pairs", "pairs_seen", "passes", "budget"}
COMPARISON_KINDS = {"effect", "seed_differences", "interval", "seed_interval", "ahead", "p", "sign_flip_p", "tost_p",
                    "non_inferiority_p", "p_adjusted", "mde", "margin", "mde_at", "verdict"}


def _comparison_value(kind: str, args: list[str], records: list[dict], decimals: Optional[int], memo: dict) -> str:
    extra = None
    if kind == "mde_at":
        if len(args) < 2 or not args[-1].isdigit():
            raise _Bad("'mde_at' takes a comparison and a number of seeds, e.g. {mde_at:FINDING:5}")
        extra, args = int(args[-1]), args[:-1]
    outcome, sign = _outcome(args, records, memo)
    comparison, judged = outcome.comparison, outcome.judged
    if kind == "verdict":
        return judged.verdict
    if comparison is None:
        raise _Bad(f"{outcome.test.describe()} has too few paired seeds for a comparison")
    scale, digits = (1.0, 3) if outcome.test.metric.loss else (100.0, 1)
    digits = digits if decimals is None else decimals
    signed = lambda x: f"{scale * sign * x:+.{digits}f}"  # noqa: E731
    plain = lambda x: f"{scale * x:.{digits}f}"  # noqa: E731
    p = lambda x: f"{x:.{3 if decimals is None else decimals}f}"  # noqa: E731
    differences = [outcome.differences[s] for s in sorted(outcome.differences)]

    def bounds(pair: tuple[float, float]) -> str:
        ends = sorted(sign * x for x in pair)
        return f"[{scale * ends[0]:+.{digits}f}, {scale * ends[1]:+.{digits}f}]"

    if kind == "effect":
        return signed(comparison.effect)
    if kind == "seed_differences":
        return ", ".join(signed(d) for d in differences)
    if kind == "seed_interval":
        return bounds(t_interval(differences))
    if kind == "interval":
        if not outcome.tasks:
            raise _Bad(f"{outcome.test.describe()} has no per-image interval")
        return bounds(multi_task_interval(outcome.tasks))
    if kind == "ahead":
        return f"{sum(sign * d > 0 for d in differences)} of {len(differences)}"
    if kind in ("p", "sign_flip_p", "tost_p", "non_inferiority_p"):
        if kind == "non_inferiority_p" and sign < 0:
            raise _Bad("a non-inferiority p is one-sided: name the arms in the comparison's own order")
        return p(getattr(comparison, "t_p" if kind == "p" else kind))
    if kind == "p_adjusted":
        if sign < 0:
            raise _Bad("an adjusted p is one-sided: name the arms in the comparison's own order")
        return p(judged.p_adjusted)
    level = ALPHA / judged.family_size
    if kind == "mde":
        return plain(minimum_detectable_effect(comparison.sd, comparison.seeds, level))
    if kind == "mde_at":
        return plain(minimum_detectable_effect(comparison.sd, extra, level))
    return plain(comparison.margin)


# --- the sentence -----------------------------------------------------------------------------------------------

def fill(text: str, records: list[dict], family: Optional[list[str]] = None) -> str:
    """The reading with every placeholder replaced; raises _Bad for the first one that cannot be filled.  A
    finding's comparison is judged within `family` (the grid's findings; default: that finding alone)."""
    memo: dict = {"family": list(family or [])}

    def one(match: re.Match) -> str:
        parts = [p.strip() for p in match.group(1).split(":")]
        decimals = None
        if len(parts) > 1 and DECIMALS.match(parts[-1]):
            decimals, parts = int(parts[-1][1:]), parts[:-1]
        kind, args = parts[0], parts[1:]
        try:
            if not args:
                raise _Bad(f"'{kind}' needs arguments")
            if kind in COMPARISON_KINDS or kind == "seeds" and (args[0] in FINDINGS.names() or " vs " in args[0]):
                if kind == "seeds":
                    outcome, _ = _outcome(args, records, memo)
                    return str(len(outcome.differences or {}))
                return _comparison_value(kind, args, records, decimals, memo)
            if kind in ARM_KINDS:
                return _arm_value(kind, args, records, decimals)
            raise _Bad(f"unknown kind '{kind}'; valid: metric, range, seeds, config, steps, pairs, pairs_seen, "
                       f"passes, budget, {', '.join(sorted(COMPARISON_KINDS))}")
        except _Bad as bad:
            raise _Bad(f"{{{match.group(1)}}}: {bad.args[0]}") from None

    return PLACEHOLDER.sub(one, text)


def design_words(grid: Grid) -> set[str]:
    """The digit-bearing words a sentence may type: arm names and their parts (batch 16 of `softmax-16`, the
    1k of `LU-1k` are the design's labels, not measurements) and metric names."""
    words = set(METRIC_NAMES)
    for arm in grid.arms:
        words.add(arm.name)
        words.update(part for part in re.split(r"[-_.]", arm.name) if any(c.isdigit() for c in part))
    return words


def typed_numbers(grid: Grid, text: str) -> list[str]:
    """Words outside placeholders that carry a digit and are not design words: numbers typed by hand."""
    bare = PLACEHOLDER.sub(" ", text)
    allowed = design_words(grid)
    words = [w.strip("()[],;:.!?\"'") for w in bare.split()]
    return [w for w in words if any(c.isdigit() for c in w) and w not in allowed]


def check(grid: Grid, finding: str) -> None:
    """What can be checked before any record exists (`grid.load_grid` calls it, so a bad reading fails before
    training): no number typed by hand, balanced braces, known kinds, and the arms and findings a placeholder
    names are the grid's."""
    text = grid.reading[finding]
    where = f"grid file '{grid.path or grid.name}', reading '{finding}'"
    typed = typed_numbers(grid, text)
    if typed:
        raise LocktuneError(f"{where}: numbers typed by hand ({', '.join(typed)}); quote every number through a "
                            "placeholder such as {metric:ARM:KEY} or {effect:FINDING} (ablate/readings.py)")
    if "{" in PLACEHOLDER.sub("", text) or "}" in PLACEHOLDER.sub("", text):
        raise LocktuneError(f"{where}: an unbalanced brace; placeholders read {{kind:argument}}")
    arms = {arm.name for arm in grid.arms}
    for match in PLACEHOLDER.finditer(text):
        kind, *args = [part.strip() for part in match.group(1).split(":")]
        if kind not in ARM_KINDS | COMPARISON_KINDS:
            raise LocktuneError(f"{where}: {{{match.group(1)}}}: unknown kind '{kind}'; valid: "
                                f"{', '.join(sorted(ARM_KINDS | COMPARISON_KINDS))}")
        named = []
        if args and " vs " in args[0]:
            named = list(_arms(args[0]))
        elif args and kind in COMPARISON_KINDS | {"seeds"} and args[0] in FINDINGS.names():
            if args[0] not in grid.findings:
                raise LocktuneError(f"{where}: {{{match.group(1)}}}: finding '{args[0]}' is not in the grid's "
                                    f"findings ({', '.join(grid.findings)})")
        elif args:
            named = [args[0]] if kind in ARM_KINDS else []
            if kind in COMPARISON_KINDS:
                raise LocktuneError(f"{where}: {{{match.group(1)}}}: '{args[0]}' is neither a finding nor 'A vs B:KEY'")
        stray = [arm for arm in named if arm not in arms]
        if stray:
            raise LocktuneError(f"{where}: {{{match.group(1)}}}: no arm '{stray[0]}' in the grid; its arms: "
                                f"{', '.join(sorted(arms))}")


class Unfilled(LocktuneError):
    """The records cannot fill a placeholder (an arm, seed or metric the reading quotes is missing): a smoke
    run or a grid still running.  `reason` is the placeholder and why, without the grid file."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def resolve(grid: Grid, finding: str, records: list[dict]) -> str:
    """The grid's reading of `finding` with its numbers filled in from `records` (one design's records).
    A bad template is a LocktuneError; records that cannot fill a good one raise `Unfilled`."""
    check(grid, finding)
    try:
        return fill(grid.reading[finding], records, grid.findings)
    except _Bad as bad:
        raise Unfilled(f"grid file '{grid.path or grid.name}', reading '{finding}': {bad.args[0]}",
                       bad.args[0]) from None
