"""The paper's findings, each judged over a grid's arm records as one or more paired comparisons.

A comparison is "arm a beats arm b" (BEATS) or "arm a is no worse than arm b" (NO_WORSE, within a
margin) on one metric, seeds paired by their number.  Every comparison a grid's findings make is one
registered family, judged by the pre-registered rule of `verdict.py` (docs/studies/index.md, "The verdict
rule"): at least 5 paired seeds; "holds" when the one-sided paired t-test and the exact one-sided sign-flip
test both reject after Holm's adjustment over the family; "does not hold" when the opposite is shown the same
way or, for "beats", TOST puts the effect within the margin; otherwise "not enough power" with the
noncentral-t minimum detectable effect (MDE).  The headline interval is the seed-level t interval; where every
paired record carries per-image outcomes, the hierarchical (seeds, then images) and per-image intervals are
shown beside it.  "not enough seeds" below 5 paired seeds, and "not run" when an arm the finding needs has no
record (it still counts once in the family's size).

A finding made of several comparisons (e.g. "LU is the best setting" = LU beats each other setting) is
combined by one rule, `combine`: it holds only if every comparison holds; it does not hold if any
comparison does not hold; otherwise not enough seeds if any has too few, else not enough power.

Records are judged only when they carry "design": 2 (the tower-settings study v2 and every grid run since).
The first design's records, grids and rule (unpaired seeds, a spread-based verdict) were retired in round 3
(issue 29); their table is archived as text in docs/studies/design1.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from locktune.ablate.records import metric, per_image
from locktune.ablate.statistics import BEATS, MARGIN, NO_WORSE, UNDERPOWERED, Comparison, compare_paired
from locktune.ablate.verdict import NOT_ENOUGH_SEEDS, Judged, Registered, judge_family
from locktune.errors import LocktuneError
from locktune.registry import Registry

DESIGN = 2
HOLDS, FAILS, MISSING = "holds", "does not hold", "not run"
LOSS_MARGIN = 0.05  # nats: the smallest loss difference the study cares about (chance is log(batch) ~ 3.5-5.5)
COMBINE_RULE = ("holds only if every comparison holds; does not hold if any does not hold; "
                "otherwise not enough seeds if any has too few, else not enough power")


@dataclass(frozen=True)
class Verdict:
    finding: str  # the registry name
    claim: str  # what the paper found
    measured: str  # the numbers here, in words
    verdict: str  # HOLDS | FAILS | UNDERPOWERED | NOT_ENOUGH_SEEDS | MISSING
    tested: str = ""  # the comparisons tested and how they combine


# --- metrics ---------------------------------------------------------------------------------------------

def _zero_shot(metrics: dict) -> bool:
    from locktune.eval.evaluation import kind_of  # the evaluators own what a result's kind is

    return kind_of(metrics) == "classification" and "mean_per_class_recall" in metrics


def zero_shot_tasks(record: dict) -> list[str]:
    """The classification tasks the primary metric averages: every zero-shot task but "near_ood/" ones."""
    return [t for t, m in record["eval"].items() if _zero_shot(m) and not t.startswith("near_ood/")]


def _mean_over_tasks(record: dict, name: str) -> float | None:
    values = [float(record["eval"][t][name]) for t in zero_shot_tasks(record)]
    return sum(values) / len(values) if values else None


def _difference(record: dict, first: str, second: str) -> float | None:
    x, y = metric(record, first), metric(record, second)
    return None if x is None or y is None else x - y


@dataclass(frozen=True)
class Metric:
    key: str  # the name in measured texts and tables
    title: str
    value: Callable[[dict], Optional[float]]  # record -> value
    tasks: Optional[Callable[[dict], list[str]]] = None  # the benchmarks it averages (per-image bootstrap)
    lower_is_better: bool = False
    loss: bool = False  # shown in nats, with LOSS_MARGIN
    own_margin: Optional[float] = None  # a metric far from accuracy-like levels needs its own margin

    @property
    def margin(self) -> float:
        if self.own_margin is not None:
            return self.own_margin
        return LOSS_MARGIN if self.loss else MARGIN

    def text(self, comparison: Comparison | Judged) -> str:
        return comparison.text(1.0, "nats", 3) if self.loss else comparison.text()


def _recorded(key: str, title: str, **kw) -> Metric:
    return Metric(key, title, lambda record: metric(record, key), **kw)


RECALL = Metric("mean_zero_shot_recall", "mean zero-shot recall (mean per-class recall over the zero-shot "
                "benchmarks but near_ood/)", lambda r: _mean_over_tasks(r, "mean_per_class_recall"), zero_shot_tasks)
FEWSHOT = _recorded("mean_fewshot_10shot_top1", "10-shot linear probe top-1 (mean over benchmarks)")
RETRIEVAL = _recorded("mean_retrieval_R@1", "retrieval R@1 (mean of both directions)")
TRAIN_LOSS = _recorded("ood_loss|train_loss", "contrastive loss on training pairs (lower is better)",
                       lower_is_better=True, loss=True)
LOSS_GAP = Metric("ood_loss gap", "held-out minus training-pairs loss (ood_loss; lower is better)",
                  lambda r: _difference(r, "ood_loss|heldout_loss", "ood_loss|train_loss"),
                  lower_is_better=True, loss=True)
ENGLISH = _recorded("multilingual_en_R@1", "English retrieval R@1 on the held-out half")
# Non-English R@1 sits near 1-2% here: a 2-point margin would call any difference "equivalent".
OTHER_LANGUAGES = _recorded("multilingual_other_R@1", "non-English retrieval R@1 (mean over languages)",
                            own_margin=0.005)


# --- one comparison ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Test:
    """Arm a against arm b on a metric (BEATS or NO_WORSE).  With `paired`, the per-seed difference is
    `paired(record_a, record_b)` (record_b None when b is None) and is compared against 0 instead."""

    a: str
    b: Optional[str]
    metric: Metric
    claim: str = BEATS
    paired: Optional[Callable[[dict, Optional[dict]], Optional[float]]] = None
    words: str = ""  # what is compared, when `paired` computes it

    def describe(self) -> str:
        if self.words:
            return self.words
        better = " (lower is better)" if self.metric.lower_is_better else ""
        return f"{self.a} {self.claim} {self.b} on {self.metric.key}{better}"


@dataclass(frozen=True)
class Outcome:
    test: Test
    verdict: str
    text: str
    comparison: Optional[Comparison] = None  # the seed statistics alone (two-sided t, TOST, ...), for readings
    differences: Optional[dict[int, float]] = None  # seed -> a - b (better-is-positive), as compared
    judged: Optional[Judged] = None  # by the verdict rule, within its family
    tasks: Optional[list] = None  # per-benchmark per-image outcomes of the paired seeds, where every record has them


class _Missing(Exception):
    """An arm the finding needs has no record: args[0] is the arm, args[1] (optional) the whole sentence."""


def _by_seed(records: list[dict], arm: str) -> dict[int, dict]:
    return {int(r["seed"]): r for r in records if r["arm"] == arm}


def _image_tasks(test: Test, rows_a: list[dict], rows_b: list[dict]):
    """(per-benchmark (correct_a, correct_b, labels) for the bootstrap, or None, and why not)."""
    if test.metric.tasks is None:
        return None, "seed tests only: no per-image data for this metric"
    names = sorted(test.metric.tasks(rows_a[0]))  # by name: the resample streams never depend on key order
    if any(sorted(test.metric.tasks(r)) != names for r in rows_a + rows_b):
        return None, "seed tests only: the paired records evaluated different benchmarks"
    tasks = []
    for task in names:
        outcomes = [per_image(r, task) for r in rows_a + rows_b]
        if any(o is None for o in outcomes):
            return None, f"seed tests only: not every paired record has per-image outcomes for {task}"
        labels = outcomes[0][1]
        if any(o[1].shape != labels.shape or (o[1] != labels).any() for o in outcomes):
            return None, f"seed tests only: the per-image labels of {task} differ between records"
        correct = np.stack([o[0] for o in outcomes]).astype(np.float64)
        tasks.append((correct[:len(rows_a)], correct[len(rows_a):], labels))
    return tasks, ""


def data_order(record: dict) -> str | None:
    """The record's data-order fingerprint (`train/data_order.py`), None in records written before it."""
    return ((record.get("train") or {}).get("run") or {}).get("data_order", {}).get("fingerprint")


def pairing(records_a: dict[int, dict], records_b: dict[int, dict], seeds: list[int]) -> str:
    """How the seeds of a comparison are paired, checked from the records rather than trusted from the design:
    the same data order (the same pairs and batches at every step) in both arms, or only the same seed."""
    orders = [(data_order(records_a[s]), data_order(records_b[s])) for s in seeds]
    if any(a is None or b is None for a, b in orders):
        return "pairing by seed; data order not recorded"
    differ = [s for s, (a, b) in zip(seeds, orders) if a != b]
    if not differ:
        return "paired: the same data order in both arms at every seed"
    return (f"paired by seed only: the data order differs at seed(s) {differ} (other pairs or batch size; "
            "the test stays valid, with less power)")


@dataclass(frozen=True)
class Prepared:
    """One comparison's paired per-seed values, ready to judge: `registered` for the verdict rule, the
    seed statistics alone (`comparison`, None under 2 seeds) and the words around the numbers."""

    test: Test
    registered: Registered
    tasks: Optional[list]
    comparison: Optional[Comparison]
    differences: dict[int, float]
    head: str  # what is compared, then ": "
    notes: str  # why there is no per-image interval, and how the seeds are paired


def prepare(records: list[dict], test: Test, name: str = "", images: bool = True) -> Prepared:
    """The comparison's paired values from the records (raises _Missing for an arm without records).  Without
    `images` the verdict rule gets no per-image outcomes (no bootstrap intervals, seconds each; the verdict
    never depends on them)."""
    records_a = _by_seed(records, test.a)
    records_b = _by_seed(records, test.b) if test.b is not None else {}
    for arm, rows in ((test.a, records_a), (test.b, records_b)):
        if arm is not None and not rows:
            raise _Missing(arm)
    sign = -1.0 if test.metric.lower_is_better else 1.0
    values_a, values_b = {}, {}
    for seed in sorted(records_a):
        if test.b is not None and seed not in records_b:
            continue
        if test.paired is not None:
            d = test.paired(records_a[seed], records_b.get(seed))
            if d is not None:
                values_a[seed], values_b[seed] = d, 0.0
            continue
        x, y = test.metric.value(records_a[seed]), test.metric.value(records_b[seed])
        if x is not None and y is not None:
            values_a[seed], values_b[seed] = sign * x, sign * y
    for arm, rows in ((test.a, records_a), (test.b, records_b)):
        if arm is not None and all(test.metric.value(r) is None for r in rows.values()):
            raise _Missing(arm, f"arm '{arm}' has no '{test.metric.key}' in its records")
    seeds = sorted(values_a)
    if test.paired is not None:
        tasks, why = None, "seed tests only: no per-image data for this derived metric"
    elif len(seeds) >= 2:
        tasks, why = _image_tasks(test, [records_a[s] for s in seeds], [records_b[s] for s in seeds])
    else:
        tasks, why = None, ""
    notes = (f" ({why})" if why else "") + (f"; {pairing(records_a, records_b, seeds)}"
                                            if test.b is not None and seeds else "")
    if len(seeds) < 2:
        ran = f"{test.a} seeds {sorted(records_a)}" + (f", {test.b} seeds {sorted(records_b)}" if test.b else "")
        notes = f" ({ran})"
    comparison = compare_paired(values_a, values_b, test.claim, test.metric.margin) if len(seeds) >= 2 else None
    registered = Registered(name or test.describe(), test.claim, values_a, values_b, test.metric.margin,
                            tasks if images else None)
    return Prepared(test, registered, tasks, comparison, {s: values_a[s] - values_b[s] for s in seeds},
                    test.describe() + ": ", notes)


def _judged_outcome(prepared: Prepared, judged: Judged) -> Outcome:
    text = prepared.head + prepared.test.metric.text(judged) + prepared.notes
    return Outcome(prepared.test, judged.verdict, text, prepared.comparison, prepared.differences, judged,
                   prepared.tasks)


def run_test(records: list[dict], test: Test, images: bool = True) -> Outcome:
    """One comparison judged as a family of one (a comparison no grid registers; readings' `A vs B:KEY`)."""
    prepared = prepare(records, test, images=images)
    return _judged_outcome(prepared, judge_family([prepared.registered])[0])


def combine(verdicts: list[str]) -> str:
    """Several comparisons, one verdict: HOLDS if all hold, FAILS if any fails, NOT_ENOUGH_SEEDS if any has too
    few seeds, else UNDERPOWERED."""
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if FAILS in verdicts:
        return FAILS
    return NOT_ENOUGH_SEEDS if NOT_ENOUGH_SEEDS in verdicts else UNDERPOWERED


# --- the registry -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    claim: str
    tests: Callable[[list[dict]], list[Test]]  # records -> the comparisons (raise _Missing for an absent arm)
    note: str = ""  # how the claim is turned into comparisons, when not obvious


FINDINGS: Registry[Finding] = Registry("finding")


def finding(name: str, claim: str, note: str = ""):
    def add(tests):
        FINDINGS.register(name)(Finding(claim, tests, note))
        return tests
    return add


def check_design(records: list[dict]) -> None:
    """Refuses records of another study design than this module's rule (a record without "design" is of the
    retired design 1): their verdicts would be meaningless under it."""
    other = sorted({int(r.get("design", 1)) for r in records} - {DESIGN})
    if other:
        raise LocktuneError(f"records of design {other[0]} are not judged: only design-{DESIGN} records are (the first "
                            "design's records and rule were retired, their table archived in docs/studies/design1.md); "
                            "rerun the grid with a studies/ grid file to judge it")


def judged_outcomes(names: list[str], records: list[dict], images: bool = True) -> dict[str, list[Outcome] | Verdict]:
    """Every comparison of the findings `names` (one grid's design-2 records) judged as one
    registered family: finding -> its outcomes, or its MISSING verdict.  A finding that cannot run still counts
    once in the family's size, so a missing arm never loosens the correction for the others."""
    prepared: dict[str, list[Prepared] | Verdict] = {}
    family: list[Registered] = []
    for name in names:
        entry = FINDINGS.get(name)
        try:
            tests = entry.tests(records)
            if not tests:
                raise _Missing("?")
            prepared[name] = [prepare(records, t, f"{name}[{k}]", images) for k, t in enumerate(tests)]
            family += [p.registered for p in prepared[name]]
        except _Missing as missing:
            text = missing.args[1] if len(missing.args) > 1 else f"needs arm '{missing.args[0]}', which has no record"
            prepared[name] = Verdict(name, entry.claim, text, MISSING)
            family.append(Registered(f"{name}[missing]", BEATS, {}, {}))
    judged = iter(judge_family(family))
    out: dict[str, list[Outcome] | Verdict] = {}
    for name in names:
        if isinstance(prepared[name], Verdict):
            next(judged)
            out[name] = prepared[name]
        else:
            out[name] = [_judged_outcome(p, next(judged)) for p in prepared[name]]
    return out


def judge_findings(names: list[str], records: list[dict]) -> dict[str, Verdict]:
    """The verdict of each finding in `names` over one grid's records, the findings' comparisons judged as one
    family."""
    check_design(records)
    out = {}
    for name, outcomes in judged_outcomes(list(names), records).items():
        out[name] = outcomes if isinstance(outcomes, Verdict) else _verdict(name, outcomes)
    return out


def judge(name: str, records: list[dict], family: Optional[list[str]] = None) -> Verdict:
    """The finding's verdict over one grid's records (design 2), its comparisons adjusted over the
    family of `family`'s findings (the grid's findings; default: this finding alone)."""
    names = list(family) if family else [name]
    if name not in names:
        names.append(name)
    return judge_findings(names, records)[name]


def _verdict(name: str, outcomes: list[Outcome]) -> Verdict:
    entry = FINDINGS.get(name)
    tested = "; ".join(o.test.describe() for o in outcomes)
    if len(outcomes) > 1:
        tested = f"{len(outcomes)} comparisons ({COMBINE_RULE}): {tested}"
    if entry.note:
        tested += f". {entry.note}"
    verdict = combine([o.verdict for o in outcomes])
    measured = "<br>".join(o.text for o in outcomes)
    if len(outcomes) > 1:
        counts = {v: sum(o.verdict == v for o in outcomes) for v in (HOLDS, FAILS, UNDERPOWERED, NOT_ENOUGH_SEEDS)}
        measured += "; " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    return Verdict(name, entry.claim, measured, verdict, tested)


# --- helpers for the findings ---------------------------------------------------------------------------------

def present(records: list[dict], arms: list[str]) -> list[str]:
    names = {r["arm"] for r in records}
    return [a for a in arms if a in names]


def _needs(records: list[dict], arms: list[str], first: str) -> list[str]:
    found = present(records, arms)
    if not found:
        raise _Missing(first)
    return found


SETTINGS = ["LU", "Lu", "LL", "UU", "Uu", "UL", "uU", "uu", "uL"]
TEXT_LOCKED = ["LL", "UL", "uL"]


# --- tower settings ---------------------------------------------------------------------------------------------

@finding("lu_close_to_LU", "Lu is close to LU: a pretrained text tower helps only a little.",
         f"Read as: Lu's shortfall against LU is smaller than the margin ({100 * MARGIN:.0f} points), i.e. Lu is "
         "no worse than LU by more than the margin (non-inferiority); a lead above the margin is 'does not hold'")
def _lu_close(records):
    return [Test("Lu", "LU", RECALL, NO_WORSE)]


@finding("lu_beats_uu", "LU beats UU: locking the image tower is better than fine-tuning it (zero-shot).")
def _lu_beats_uu(records):
    return [Test("LU", "UU", RECALL)]


@finding("uu_overfits_training_distribution", "UU fits the training distribution better than LU but generalises "
         "worse: its loss on training pairs is lower, and its gap from training to held-out, out-of-distribution "
         "pairs is larger.",
         "Both comparisons on the ood_loss evaluation (eval-mode loss on sampled training pairs and on the "
         f"held-out Tux Paint pairs), margin {LOSS_MARGIN} nats")
def _ood(records):
    return [Test("UU", "LU", TRAIN_LOSS), Test("LU", "UU", LOSS_GAP)]


@finding("unlocking_degrades_image_features", "Contrastive fine-tuning degrades the image representation: "
         "few-shot linear probes on the image tower's features are worse after UU than with the locked tower (LU).")
def _fewshot(records):
    return [Test("LU", "UU", FEWSHOT)]


@finding("uu_beats_uu_scratch", "UU beats uu (CLIP-style from scratch): pretrained towers help.")
def _uu_scratch(records):
    return [Test("UU", "uu", RECALL)]


@finding("locked_text_at_bottom", "Any setting that locks the text tower (LL, UL, uL) is at the bottom.",
         "Every setting that trains its text tower against every text-locked one")
def _text_locked(records):
    locked = _needs(records, TEXT_LOCKED, "LL")
    rest = _needs(records, [s for s in SETTINGS if s not in TEXT_LOCKED], "LU")
    return [Test(other, low, RECALL) for low in locked for other in rest]


def _relative_catch_up(uu: dict, lu: dict) -> float | None:
    z_uu, z_lu, r_uu, r_lu = RECALL.value(uu), RECALL.value(lu), RETRIEVAL.value(uu), RETRIEVAL.value(lu)
    if None in (z_uu, z_lu, r_uu, r_lu) or min(z_lu, r_lu) <= 0:
        return None
    return r_uu / r_lu - z_uu / z_lu


@finding("retrieval_uu_catches_up", "For retrieval the unlocked settings catch up: UU's shortfall against LU "
         "is smaller on retrieval than on zero-shot classification (relative to LU).",
         f"Per seed: UU/LU on retrieval R@1 minus UU/LU on zero-shot recall, tested > 0 (margin {100 * MARGIN:.0f}% of LU)")
def _retrieval(records):
    return [Test("UU", "LU", RETRIEVAL, paired=_relative_catch_up,
                 words="UU's standing relative to LU is higher on retrieval R@1 than on mean zero-shot recall")]


# --- text towers ---------------------------------------------------------------------------------------------

@finding("bigger_text_tower_helps", "Bigger text towers help (same data, same steps).",
         "The largest text tower run against the smallest")
def _bigger_text(records):
    sizes = present(records, ["text-small", "text-medium", "text-large"])
    if len(sizes) < 2:
        raise _Missing("text-large" if "text-large" not in sizes else "text-small")
    return [Test(sizes[-1], sizes[0], RECALL)]


# --- image towers -------------------------------------------------------------------------------------------

def _over_twice_chance(record: dict, _: Optional[dict]) -> float | None:
    recall, chance = RECALL.value(record), _mean_over_tasks(record, "chance_top1")
    return None if recall is None or chance is None else recall - 2 * chance


# --- loss and batch -------------------------------------------------------------------------------------------

@finding("global_beats_local_loss", "A global contrastive loss (negatives gathered from every process) beats a "
         "per-process local loss.")
def _global_local(records):
    return [Test("global-2proc", "local-2proc", RECALL)]


# --- image head -------------------------------------------------------------------------------------------------

@finding("image_head_optional", "A linear head on the locked image tower is not needed: using the tower's own "
         "embedding (no head) is not worse.")
def _head(records):
    return [Test("no-head", "linear-head", RECALL, NO_WORSE)]


# --- multilingual -----------------------------------------------------------------------------------------------

@finding("multilingual_keeps_english", "Multilingual training (no English-only filtering) keeps English "
         "retrieval quality.")
def _keeps_english(records):
    return [Test("multilingual", "english-only", ENGLISH, NO_WORSE)]


@finding("multilingual_helps_other_languages", "Multilingual training improves retrieval in the other languages.")
def _other_languages(records):
    return [Test("multilingual", "english-only", OTHER_LANGUAGES)]


# --- practitioner studies (design 2): equal compute, data size ---------------------------------------------------

@finding("equal_compute_lu_beats_uu", "With the same wall-clock budget, LU beats UU (the embedding cache buys LU "
         "many more steps).")
def _equal_compute_uu(records):
    return [Test("LU-budget", "UU-budget", RECALL)]


@finding("equal_compute_lu_beats_uu_scratch", "With the same wall-clock budget, LU beats uu (CLIP-style from "
         "scratch).")
def _equal_compute_scratch(records):
    return [Test("LU-budget", "uu-budget", RECALL)]


def _data_size(size: str):
    @finding(f"data_size_lu_beats_uu_{size}", f"LU beats UU when training on {size} pairs (same steps).")
    def tests(records):
        return [Test(f"LU-{size}", f"UU-{size}", RECALL)]
    return tests


for _size in ("1k", "3k", "all"):
    _data_size(_size)


# --- softmax vs sigmoid loss (issue 16, design 2) -----------------------------------------------------------------

def _sigmoid_no_worse(batch: int):
    @finding(f"sigmoid_no_worse_b{batch}", f"At batch {batch}, the sigmoid loss is at least as good as the softmax "
             "loss (SigLIP).", "Non-inferiority of sigmoid against softmax at the margin")
    def tests(records):
        return [Test(f"sigmoid-{batch}", f"softmax-{batch}", RECALL, NO_WORSE)]
    return tests


for _batch_size in (16, 64, 256):
    _sigmoid_no_worse(_batch_size)


@finding("sigmoid_gap_largest_at_small_batch", "The sigmoid loss's advantage over softmax is largest at small batch "
         "(SigLIP): larger at batch 16 than at batch 256.",
         "Per seed: (sigmoid-16 - softmax-16) - (sigmoid-256 - softmax-256) on mean zero-shot recall, tested > 0")
def _sigmoid_gap(records):
    big_sigmoid, big_softmax = _by_seed(records, "sigmoid-256"), _by_seed(records, "softmax-256")
    for arm, rows in (("sigmoid-256", big_sigmoid), ("softmax-256", big_softmax)):
        if not rows:
            raise _Missing(arm)

    def gap_difference(small_sigmoid: dict, small_softmax: Optional[dict]) -> float | None:
        seed = int(small_sigmoid["seed"])
        rows = (small_sigmoid, small_softmax, big_sigmoid.get(seed), big_softmax.get(seed))
        values = [None if r is None else RECALL.value(r) for r in rows]
        if None in values:
            return None
        return (values[0] - values[1]) - (values[2] - values[3])

    return [Test("sigmoid-16", "softmax-16", RECALL, paired=gap_difference,
                 words="sigmoid's lead over softmax at batch 16 minus its lead at batch 256")]


# --- beyond LiT on the same cache (issue 27, design 2): both towers locked, richer heads, equal wall-clock --------

# Which arm reaches the largest probe share (`mean_probe_share`) is read descriptively in the beyond-lit grid's
# tables: choosing the best arm from the records is not a pre-registered comparison.


@finding("ll_mlp_beats_ll_linear", "With both towers locked, MLP heads beat linear heads (ShareLock, FuseMix: "
         "the heads are all that trains, so their capacity is the model's).")
def _ll_mlp(records):
    return [Test("LL-mlp", "LL-linear", RECALL)]


@finding("mixup_helps_ll", "Latent mixup (one Beta(alpha, alpha) coefficient shared by both sides of a pair) helps "
         "LL with MLP heads (FuseMix).")
def _mixup(records):
    return [Test("LL-mlp-mixup", "LL-mlp", RECALL)]


@finding("blocks_beats_lu", "Trainable transformer blocks over the locked tower's tokens beat LiT's linear head on "
         "its pooled output (dino.txt), at the same wall-clock budget.")
def _blocks(records):
    return [Test("LU-blocks2", "LU", RECALL)]


# --- round 3 (issue 29 item 4): one comparison per claim where the claim allows, on a per-seed derived value ----
#
# "X is the best" and "the Y settings are at the bottom" are intersection-union claims: they hold only if every
# pairwise comparison they imply holds.  Each is registered as ONE comparison on a per-seed value that is at most
# every pairwise difference the claim implies (a minimum over them): if that value's mean is > 0, so is every
# pairwise mean, so the null "some pairwise claim is false" implies the derived null, and a level-alpha test of
# the derived value is a level-alpha test of the whole claim (it never needs a multiplicity correction over the
# pairs, and it fails whenever one pairwise comparison fails on the seeds).  docs/studies/round3.md.

TEXT_TRAINED = [s for s in SETTINGS if s not in TEXT_LOCKED]


def _seed_rows(records: list[dict], arms: list[str]) -> dict[str, dict[int, dict]]:
    """arm -> seed -> record, for arms that have records (raises _Missing for one that has none)."""
    rows = {arm: _by_seed(records, arm) for arm in arms}
    for arm, by_seed in rows.items():
        if not by_seed:
            raise _Missing(arm)
    return rows


def _at_seed(rows: dict[str, dict[int, dict]], seed: int, value: Callable[[dict], Optional[float]]) -> dict | None:
    """arm -> value at `seed` for every arm of `rows`, or None when an arm has no record or no value there
    (that seed is then left out of the comparison, as an unpaired seed is)."""
    out = {}
    for arm, by_seed in rows.items():
        record = by_seed.get(seed)
        v = None if record is None else value(record)
        if v is None:
            return None
        out[arm] = v
    return out


def _lead_over_best(records: list[dict], arm: str, others: list[str],
                    value: Callable[[dict], Optional[float]] = RECALL.value):
    """The paired function of 'arm beats every one of `others`': per seed, arm's value minus the largest of
    the others' values at that seed."""
    rows = _seed_rows(records, others)

    def lead(record: dict, _: Optional[dict]) -> float | None:
        seed, own = int(record["seed"]), value(record)
        rest = _at_seed(rows, seed, value)
        return None if own is None or rest is None else own - max(rest.values())
    return lead


@finding("lu_best_iut", "LU is the best setting for zero-shot classification.",
         "One comparison (intersection-union): per seed, LU's mean zero-shot recall minus the best recall of every "
         "other setting with records, tested > 0. It holds only if LU beats each of them, so it implies every "
         "pairwise 'LU beats X' at the same level, with no correction over the pairs")
def _lu_best_iut(records):
    others = _needs(records, [s for s in SETTINGS if s != "LU"], "UU")
    _seed_rows(records, ["LU"])
    return [Test("LU", None, RECALL, paired=_lead_over_best(records, "LU", others),
                 words=f"LU minus the best of {', '.join(others)} per seed, on mean zero-shot recall")]


@finding("text_locked_at_bottom_iut", "Any setting that locks the text tower (LL, UL, uL) is at the bottom.",
         "One comparison (intersection-union): per seed, the lowest mean zero-shot recall of the settings that "
         "train their text tower minus the highest of the text-locked settings, over the settings with records, "
         "tested > 0. It holds only if every text-trained setting beats every text-locked one, so it implies each "
         "pairwise comparison at the same level. Round 3 registers it in three grids (towers-r3, towers-scratch, "
         "text-locked), each covering the pairs its arms allow; the paper's sentence holds there only if it "
         "holds in all three (an intersection-union over the grids)")
def _text_locked_iut(records):
    locked = _needs(records, TEXT_LOCKED, "LL")
    trained = _needs(records, TEXT_TRAINED, "LU")
    low_rows, high_rows = _seed_rows(records, trained), _seed_rows(records, locked)

    def gap(record: dict, _: Optional[dict]) -> float | None:
        seed = int(record["seed"])
        low, high = _at_seed(low_rows, seed, RECALL.value), _at_seed(high_rows, seed, RECALL.value)
        return None if low is None or high is None else min(low.values()) - max(high.values())

    return [Test(trained[0], None, RECALL, paired=gap,
                 words=f"the lowest of {', '.join(trained)} minus the highest of {', '.join(locked)} per seed, "
                       "on mean zero-shot recall")]


@finding("bert_best_text_tower", "Of the from-scratch text towers, the BERT-style one works best "
         "(the paper's YFCC runs: BERT > T5 > ViT-style).",
         "One comparison (intersection-union): per seed, bert-scratch's mean zero-shot recall minus the better of "
         "t5-scratch and text-medium (the CLIP/ViT-style tower of T5's width and depth), tested > 0; it implies "
         "both pairwise comparisons")
def _bert_best(records):
    others = _needs(records, ["t5-scratch", "text-medium"], "t5-scratch")
    _seed_rows(records, ["bert-scratch"])
    return [Test("bert-scratch", None, RECALL, paired=_lead_over_best(records, "bert-scratch", others),
                 words=f"bert-scratch minus the best of {', '.join(others)} per seed, on mean zero-shot recall")]


@finding("any_image_architecture_iut", "LiT works whatever the image tower's architecture: each locked tower gives "
         "zero-shot accuracy well above chance (here: mean zero-shot recall above twice chance).",
         "One comparison (intersection-union): per seed, the lowest over the architectures of (mean zero-shot "
         "recall minus twice chance), tested > 0; it implies each architecture's own comparison")
def _architectures_iut(records):
    from locktune.ablate.records import arms_in_order

    arms = arms_in_order(records)
    if not arms:
        raise _Missing("?")
    rows = _seed_rows(records, arms)

    def lowest(record: dict, _: Optional[dict]) -> float | None:
        margins = _at_seed(rows, int(record["seed"]), lambda r: _over_twice_chance(r, None))
        return None if margins is None else min(margins.values())

    return [Test(arms[0], None, RECALL, paired=lowest,
                 words=f"the lowest of {', '.join(arms)} in mean zero-shot recall above twice chance, per seed")]


def _pairs_seen(record: dict) -> int | None:
    train = (record.get("config") or {}).get("train") or {}
    steps, batch = train.get("steps"), train.get("batch_size")
    return int(steps) * int(batch) if isinstance(steps, int) and isinstance(batch, int) else None


PAIRS_SEEN_TOLERANCE = 0.02  # 31 steps of 128 = 3,968 pairs against 4,000


@finding("bigger_batch_better_same_pairs", "A bigger batch is better (here: at the same number of pairs seen, "
         "steps x batch equal).",
         "One comparison (intersection-union): per seed, the smallest lead of each batch size over the next "
         "smaller one (arms batch-N, every arm seeing the same pairs within 2%), tested > 0; it implies that "
         "each larger batch beats each smaller one")
def _batch_same_pairs(records):
    sizes = sorted({r["arm"] for r in records if r["arm"].startswith("batch-")}, key=lambda a: int(a.split("-")[1]))
    if len(sizes) < 2:
        raise _Missing("batch-*")
    seen = {s for s in (_pairs_seen(r) for r in records if r["arm"] in sizes) if s is not None}
    if seen and max(seen) > (1 + PAIRS_SEEN_TOLERANCE) * min(seen):
        raise _Missing(sizes[0], f"the batch arms saw {sorted(seen)} pairs: this finding compares batch sizes at "
                                 "the same pairs seen (steps x batch equal within 2%)")
    rows = _seed_rows(records, sizes)

    def smallest_step_up(record: dict, _: Optional[dict]) -> float | None:
        values = _at_seed(rows, int(record["seed"]), RECALL.value)
        if values is None:
            return None
        return min(values[big] - values[small] for small, big in zip(sizes, sizes[1:]))

    return [Test(sizes[-1], None, RECALL, paired=smallest_step_up,
                 words=f"the smallest step-up in mean zero-shot recall along {' < '.join(sizes)} per seed "
                       "(same pairs seen)")]


@finding("gradual_unlock_does_not_help_iut", "Locking the image tower at the start and unlocking it later (at once "
         "or gradually) does not beat keeping it locked.",
         f"One comparison (intersection-union, non-inferiority): per seed, locked's mean zero-shot recall minus the "
         f"better of unlock-half and unlock-gradual, tested > -{100 * MARGIN:.0f} points; it implies locked is no "
         "worse than each schedule")
def _schedules_iut(records):
    schedules = _needs(records, ["unlock-half", "unlock-gradual"], "unlock-half")
    _seed_rows(records, ["locked"])
    return [Test("locked", None, RECALL, NO_WORSE, paired=_lead_over_best(records, "locked", schedules),
                 words=f"locked minus the best of {', '.join(schedules)} per seed, on mean zero-shot recall "
                       "(non-inferiority)")]
