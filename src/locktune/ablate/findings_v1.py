"""The first design's findings (records without "design": 2, the committed RESULTS.md): kept only so that
those records keep their verdicts; new records are judged by `findings.py` on `statistics.py`.  Each check
compares measured numbers and says whether the finding holds here, does not hold, or is unclear within
the seeds' spread.

A difference counts when it is larger than the spread: the two arms' seed standard deviations combined
(sqrt(sa^2 + sb^2)); an arm run with one seed borrows the pooled seed spread of the grid's arms that have
several.  With no seed spread at all the verdict is `unclear` unless the difference is in the claimed
direction and larger than MIN_EFFECT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from locktune.ablate.records import Summary, summarize
from locktune.registry import Registry

HOLDS, FAILS, UNCLEAR, MISSING = "holds", "does not hold", "unclear", "not run"
MIN_EFFECT = 0.02  # with no seed spread to judge by, smaller differences than this are called unclear


@dataclass(frozen=True)
class Verdict:
    finding: str  # the registry name
    claim: str  # what the paper found
    measured: str  # the numbers here, in words
    verdict: str  # HOLDS | FAILS | UNCLEAR | MISSING


@dataclass(frozen=True)
class Finding:
    claim: str
    check: Callable[[list[dict]], tuple[str, str]]  # records -> (measured, verdict)


FINDINGS: Registry[Finding] = Registry("finding (design 1)")


def finding(name: str, claim: str):
    def add(check):
        FINDINGS.register(name)(Finding(claim, check))
        return check
    return add


def judge(name: str, records: list[dict]) -> Verdict:
    entry = FINDINGS.get(name)
    try:
        measured, verdict = entry.check(records)
    except _Missing as missing:
        measured, verdict = f"needs arm '{missing.args[0]}', which has no record", MISSING
    return Verdict(name, entry.claim, measured, verdict)


class _Missing(Exception):
    pass


# --- helpers -------------------------------------------------------------------------------------------

def _get(records: list[dict], arm: str, key: str) -> Summary:
    summary = summarize(records, arm, key)
    if summary is None:
        raise _Missing(arm)
    return summary


def pooled_spread(records: list[dict], key: str) -> float | None:
    """The seed standard deviation pooled over the arms run with several seeds (None if there are none)."""
    arms = sorted({r["arm"] for r in records})
    parts = [(s.seeds - 1, s.std) for a in arms if (s := summarize(records, a, key)) is not None and s.seeds > 1]
    if not parts:
        return None
    return math.sqrt(sum(dof * std ** 2 for dof, std in parts) / sum(dof for dof, _ in parts))


def _spread(records: list[dict], key: str, *summaries: Summary) -> float | None:
    pooled = pooled_spread(records, key)
    parts = []
    for s in summaries:
        if s.seeds > 1:
            parts.append(s.std)
        elif pooled is not None:
            parts.append(pooled)
        else:
            return None
    return math.sqrt(sum(p ** 2 for p in parts))


def compare(difference: float, spread: float | None) -> str:
    """`difference` > 0 is the claimed direction."""
    if spread is None:
        return HOLDS if difference > MIN_EFFECT else FAILS if difference < -MIN_EFFECT else UNCLEAR
    if difference > spread:
        return HOLDS
    if difference < -spread:
        return FAILS
    return UNCLEAR


def fmt(summary: Summary, key: str) -> str:
    if "loss" in key:
        text = f"{summary.mean:.3f}"
        return text + (f" ± {summary.std:.3f}" if summary.seeds > 1 else "")
    text = f"{100 * summary.mean:.1f}%"
    return text + (f" ± {100 * summary.std:.1f}" if summary.seeds > 1 else "")


def _spread_text(spread: float | None, key: str) -> str:
    if spread is None:
        return "no seed spread available"
    return f"spread {spread:.3f}" if "loss" in key else f"spread {100 * spread:.1f} pt"


def better(records: list[dict], a: str, b: str, key: str, what: str) -> tuple[str, str]:
    """Arm `a` beats arm `b` on `key` (higher is better)."""
    sa, sb = _get(records, a, key), _get(records, b, key)
    spread = _spread(records, key, sa, sb)
    return (f"{what}: {a} {fmt(sa, key)} vs {b} {fmt(sb, key)} ({_spread_text(spread, key)})",
            compare(sa.mean - sb.mean, spread))


def best_arm(records: list[dict], arms: list[str], key: str = "mean_zero_shot_top1", worst: bool = False) -> str:
    """The arm with the highest (or lowest) mean of `key` among `arms` that have records."""
    candidates = present(records, arms)
    if not candidates:
        raise _Missing(arms[0] if arms else "?")
    return (min if worst else max)(candidates, key=lambda a: _get(records, a, key).mean)


def present(records: list[dict], arms: list[str]) -> list[str]:
    names = {r["arm"] for r in records}
    return [a for a in arms if a in names]


ZS = "mean_zero_shot_top1"
FEWSHOT = "mean_fewshot_10shot_top1"
RETRIEVAL = "mean_retrieval_R@1"


# --- tower settings --------------------------------------------------------------------------------------

@finding("lu_best", "LU is the best setting for zero-shot classification.")
def _lu_best(records):
    others = [a for a in present(records, ["Lu", "LL", "UU", "Uu", "UL", "uU", "uu", "uL"])]
    lu = _get(records, "LU", ZS)
    best = best_arm(records, others, ZS)
    sb = _get(records, best, ZS)
    spread = _spread(records, ZS, lu, sb)
    return (f"mean zero-shot top-1: LU {fmt(lu, ZS)}, best other setting {best} {fmt(sb, ZS)} "
            f"({_spread_text(spread, ZS)})", compare(lu.mean - sb.mean, spread))


@finding("lu_close_to_LU", "Lu is close to LU: a pretrained text tower helps only a little (LU's lead over Lu "
         "is smaller than its lead over the best setting that trains the image tower).")
def _lu_close(records):
    lu, small = _get(records, "LU", ZS), _get(records, "Lu", ZS)
    trained = present(records, ["UU", "Uu", "uU", "uu"])
    best = best_arm(records, trained, ZS)
    sb = _get(records, best, ZS)
    gap, lead = lu.mean - small.mean, lu.mean - sb.mean
    spread = _spread(records, ZS, small, sb)
    text = (f"mean zero-shot top-1: LU {fmt(lu, ZS)}, Lu {fmt(small, ZS)}, best image-training setting {best} "
            f"{fmt(sb, ZS)}; LU-Lu {100 * gap:.1f} pt vs LU-{best} {100 * lead:.1f} pt ({_spread_text(spread, ZS)})")
    return text, compare(lead - gap, spread)  # = Lu - best image-training setting


@finding("lu_beats_uu", "LU beats UU: locking the image tower is better than fine-tuning it (zero-shot).")
def _lu_beats_uu(records):
    return better(records, "LU", "UU", ZS, "mean zero-shot top-1")


@finding("uu_overfits_training_distribution", "LU's advantage over UU is mostly out of distribution: UU fits "
         "the training pairs better but its loss on held-out, out-of-distribution pairs is worse (a larger gap).")
def _ood(records):
    key_train, key_held = "ood_loss|train_loss", "ood_loss|heldout_loss"
    lu_t, uu_t = _get(records, "LU", key_train), _get(records, "UU", key_train)
    lu_h, uu_h = _get(records, "LU", key_held), _get(records, "UU", key_held)
    lu_gap, uu_gap = lu_h.mean - lu_t.mean, uu_h.mean - uu_t.mean
    spread = _spread(records, key_held, lu_h, uu_h)
    text = (f"loss on training pairs LU {fmt(lu_t, key_train)} vs UU {fmt(uu_t, key_train)}; on held-out Tux Paint "
            f"pairs LU {fmt(lu_h, key_held)} vs UU {fmt(uu_h, key_held)}; gap (held-out - training) LU "
            f"{lu_gap:.3f} vs UU {uu_gap:.3f} ({_spread_text(spread, key_held)})")
    return text, compare(uu_gap - lu_gap, spread)


@finding("unlocking_degrades_image_features", "Contrastive fine-tuning degrades the image representation: "
         "few-shot linear probes on the image tower's features are worse after UU than with the locked tower (LU).")
def _fewshot(records):
    return better(records, "LU", "UU", FEWSHOT, "10-shot linear probe top-1 (mean over benchmarks)")


@finding("uu_beats_uu_scratch", "UU beats uu (CLIP-style from scratch): pretrained towers help.")
def _uu_scratch(records):
    return better(records, "UU", "uu", ZS, "mean zero-shot top-1")


@finding("locked_text_at_bottom", "Any setting that locks the text tower (LL, UL, uL) is at the bottom.")
def _text_locked(records):
    locked = present(records, ["LL", "UL", "uL"])
    rest = present(records, ["LU", "Lu", "UU", "Uu", "uU", "uu"])
    if not locked:
        raise _Missing("LL")
    best_locked = best_arm(records, locked, ZS)
    worst_rest = best_arm(records, rest, ZS, worst=True)
    sl, sr = _get(records, best_locked, ZS), _get(records, worst_rest, ZS)
    spread = _spread(records, ZS, sl, sr)
    # Beside the verdict: the text-locked setting against the trained-text ones with the same image letter.
    pairs = [f"{image}L {fmt(_get(records, image + 'L', ZS), ZS)} vs " + " / ".join(
        f"{image}{t} {fmt(_get(records, image + t, ZS), ZS)}" for t in "Uu" if image + t in rest)
        for image in "LUu" if image + "L" in locked]
    return (f"mean zero-shot top-1: best text-locked setting {best_locked} {fmt(sl, ZS)}, worst other setting "
            f"{worst_rest} {fmt(sr, ZS)} ({_spread_text(spread, ZS)}); per image setting: " + "; ".join(pairs),
            compare(sr.mean - sl.mean, spread))


@finding("retrieval_uu_catches_up", "For retrieval the unlocked settings catch up: UU's shortfall against LU "
         "is smaller on retrieval than on zero-shot classification (relative to LU).")
def _retrieval(records):
    lu_z, uu_z = _get(records, "LU", ZS), _get(records, "UU", ZS)
    lu_r, uu_r = _get(records, "LU", RETRIEVAL), _get(records, "UU", RETRIEVAL)
    rel_z = (lu_z.mean - uu_z.mean) / max(lu_z.mean, 1e-9)
    rel_r = (lu_r.mean - uu_r.mean) / max(lu_r.mean, 1e-9)
    # Relative spread: each metric's spread over LU's mean, combined.
    sz, sr = _spread(records, ZS, lu_z, uu_z), _spread(records, RETRIEVAL, lu_r, uu_r)
    spread = None if sz is None or sr is None else math.hypot(sz / max(lu_z.mean, 1e-9), sr / max(lu_r.mean, 1e-9))
    text = (f"UU relative to LU: zero-shot {fmt(uu_z, ZS)} vs {fmt(lu_z, ZS)} ({-100 * rel_z:+.0f}%), retrieval R@1 "
            f"(mean of both directions) {fmt(uu_r, RETRIEVAL)} vs {fmt(lu_r, RETRIEVAL)} ({-100 * rel_r:+.0f}%)"
            + (f" (relative spread {100 * spread:.0f}%)" if spread is not None else ""))
    return text, compare(rel_z - rel_r, spread)


# --- text towers ----------------------------------------------------------------------------------------

@finding("bigger_text_tower_helps", "Bigger text towers help (same data, same steps).")
def _bigger_text(records):
    sizes = present(records, ["text-small", "text-medium", "text-large"])
    if len(sizes) < 2:
        raise _Missing("text-large")
    small, large = sizes[0], sizes[-1]
    measured, verdict = better(records, large, small, ZS, "mean zero-shot top-1")
    if len(sizes) == 3:
        measured += f"; {sizes[1]} {fmt(_get(records, sizes[1], ZS), ZS)}"
    return measured, verdict


@finding("bert_beats_t5_and_vit_text", "Of the from-scratch text towers, the BERT-style one works best "
         "(the paper's YFCC runs: BERT > T5 > ViT-style).")
def _text_kinds(records):
    others = present(records, ["text-medium", "t5-scratch"])  # the CLIP-style tower at the T5 arm's size
    best = best_arm(records, others, ZS)
    measured, verdict = better(records, "bert-scratch", best, ZS, "mean zero-shot top-1")
    rest = ", ".join(f"{a} {fmt(_get(records, a, ZS), ZS)}" for a in others if a != best)
    return measured + (f"; {rest}" if rest else ""), verdict


# --- image towers -----------------------------------------------------------------------------------------

@finding("any_image_architecture", "LiT works whatever the image tower's architecture: each locked tower gives "
         "zero-shot accuracy well above chance (here: at least twice chance).")
def _architectures(records):
    arms = sorted({r["arm"] for r in records}, key=lambda a: a)
    parts, ratios = [], []
    for arm in arms:
        top1 = _get(records, arm, ZS)
        chance = _get(records, arm, "mean_zero_shot_chance")
        parts.append(f"{arm} {fmt(top1, ZS)} (chance {100 * chance.mean:.1f}%)")
        ratios.append(top1.mean / chance.mean)
    verdict = HOLDS if min(ratios) >= 2 else FAILS if min(ratios) < 1.2 else UNCLEAR
    return "mean zero-shot top-1: " + ", ".join(parts), verdict


# --- loss and batch ---------------------------------------------------------------------------------------

@finding("global_beats_local_loss", "A global contrastive loss (negatives gathered from every process) beats a "
         "per-process local loss.")
def _global_local(records):
    return better(records, "global-2proc", "local-2proc", ZS, "mean zero-shot top-1, 2 processes")


@finding("bigger_batch_better", "A bigger batch is better (same number of steps).")
def _batch(records):
    sizes = sorted({r["arm"] for r in records if r["arm"].startswith("batch-")}, key=lambda a: int(a.split("-")[1]))
    if len(sizes) < 2:
        raise _Missing("batch-*")
    measured, verdict = better(records, sizes[-1], sizes[0], ZS, "mean zero-shot top-1")
    middle = ", ".join(f"{a} {fmt(_get(records, a, ZS), ZS)}" for a in sizes[1:-1])
    return measured + (f"; {middle}" if middle else ""), verdict


# --- image-tower schedules --------------------------------------------------------------------------------

@finding("gradual_unlock_does_not_help", "Locking the image tower at the start and unlocking it later (at once "
         "or gradually) does not beat keeping it locked.")
def _schedules(records):
    locked = _get(records, "locked", ZS)
    schedules = present(records, ["unlock-half", "unlock-gradual"])
    best = best_arm(records, schedules, ZS)
    measured, verdict = better(records, best, "locked", ZS, "mean zero-shot top-1")
    flipped = {HOLDS: FAILS, FAILS: HOLDS}.get(verdict, verdict)  # the claim is "does not beat"
    note = ""
    if verdict == UNCLEAR:
        flipped = HOLDS  # no schedule beats locked beyond the spread: that is the claim
        note = "; no schedule is better beyond the spread"
    rest = ", ".join(f"{a} {fmt(_get(records, a, ZS), ZS)}" for a in schedules if a != best)
    return f"best schedule {measured}" + (f"; {rest}" if rest else "") + note, flipped


# --- image head -------------------------------------------------------------------------------------------

@finding("image_head_optional", "A linear head on the locked image tower is not needed: using the tower's own "
         "embedding (no head) is not worse.")
def _head(records):
    measured, verdict = better(records, "no-head", "linear-head", ZS, "mean zero-shot top-1")
    note = "; no difference beyond the spread" if verdict == UNCLEAR else ""
    return measured + note, HOLDS if verdict in (HOLDS, UNCLEAR) else FAILS


# --- multilingual -----------------------------------------------------------------------------------------

@finding("multilingual_keeps_english", "Multilingual training (no English-only filtering) keeps English "
         "retrieval quality.")
def _keeps_english(records):
    key = "multilingual_en_R@1"
    measured, verdict = better(records, "multilingual", "english-only", key, "English retrieval R@1 on the held-out half")
    note = "; no difference beyond the spread" if verdict == UNCLEAR else ""
    return measured + note, HOLDS if verdict in (HOLDS, UNCLEAR) else FAILS


@finding("multilingual_helps_other_languages", "Multilingual training improves retrieval in the other languages.")
def _other_languages(records):
    return better(records, "multilingual", "english-only", "multilingual_other_R@1",
                  "non-English retrieval R@1 (mean over languages) on the held-out half")
