"""Paper claims judged over several grids: one registered finding, run in each grid that covers part of the claim.

A claim whose pairs do not fit one 90-minute grid is split over grids, each registering the same finding over the
pairs its arms allow (round 3: "text-locked settings are at the bottom" in towers-r3, towers-scratch and
text-locked).  Each grid's verdict is at level 0.05 within its own family; the claim holds only if it holds in
every grid (an intersection-union over the grids, so the conjunction is also at level 0.05, with no further
correction), does not hold if it fails in any, and is not judged while a grid has no records.
"""
from __future__ import annotations

from dataclasses import dataclass

from locktune.ablate.findings import FAILS, HOLDS, MISSING, combine
from locktune.registry import Registry


@dataclass(frozen=True)
class CrossGridClaim:
    claim: str  # the paper's sentence
    finding: str  # the finding each grid registers
    grids: tuple[str, ...]  # the grids that together cover the claim


CLAIMS: Registry[CrossGridClaim] = Registry("cross-grid claim")

CLAIMS.register("text_locked_at_bottom")(CrossGridClaim(
    "Any setting that locks the text tower (LL, UL, uL) is at the bottom.", "text_locked_at_bottom_iut",
    ("towers-r3", "towers-scratch", "text-locked")))


@dataclass(frozen=True)
class ClaimVerdict:
    claim: CrossGridClaim
    per_grid: dict[str, str]  # grid -> the finding's verdict there (MISSING where the grid has no records)
    verdict: str


def judge_claim(claim: CrossGridClaim, verdicts: dict[str, dict[str, str]]) -> ClaimVerdict:
    """The claim's verdict from `verdicts` (grid -> finding -> verdict, the grids' own family-adjusted verdicts).
    FAILS if any grid's verdict fails (a failed component is a failed conjunction, whatever the others say);
    MISSING while any grid is not run; otherwise HOLDS only if every grid holds, else the weakest reason."""
    per_grid = {grid: verdicts.get(grid, {}).get(claim.finding, MISSING) for grid in claim.grids}
    found = list(per_grid.values())
    if FAILS in found:
        verdict = FAILS
    elif MISSING in found:
        verdict = MISSING
    else:
        verdict = combine(found)
    return ClaimVerdict(claim, per_grid, verdict)


def claims_table(verdicts: dict[str, dict[str, str]]) -> list[str]:
    """Markdown lines for every registered claim one of whose grids is in `verdicts` (none: no lines)."""
    rows = []
    for name in CLAIMS.names():
        claim = CLAIMS.get(name)
        if not any(grid in verdicts for grid in claim.grids):
            continue
        judged = judge_claim(claim, verdicts)
        parts = ", ".join(f"{grid}: {verdict}" for grid, verdict in judged.per_grid.items())
        rows.append(f"| {claim.claim} | `{claim.finding}` in {parts} | {judged.verdict} |")
    if not rows:
        return []
    return ["Claims split over several grids: each grid judges the same finding over the pairs its arms allow, "
            "within its own family; the claim holds only if it holds in every grid (an intersection-union over "
            "the grids: no further correction), does not hold if it fails in any, and is not run while a grid "
            "has no records.", "",
            "| claim (paper) | per grid | verdict here |", "|---|---|---|", *rows, ""]
