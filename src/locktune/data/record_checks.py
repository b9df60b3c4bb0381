"""Record checks shared by every pair source: a bad record is skipped and counted by reason, never fatal."""

from __future__ import annotations

import sys
from collections import Counter

from locktune.data.pairs import clean_caption
from locktune.errors import LocktuneError

# Longer captions are almost always scraped page text, not a description; text towers truncate at
# ~77 tokens anyway, so such a record would train on an arbitrary prefix.
MAX_CAPTION_CHARS = 2000
# Checked on the raw text before it is cleaned, so a 200 MB "caption" is refused without a regex pass
# over it; room for whitespace that cleaning would collapse (4 bytes a character for undecoded bytes).
MAX_RAW_CAPTION_CHARS = 4 * MAX_CAPTION_CHARS
# A KEY.txt / KEY.json holds a handful of captions; a bigger one is not read at all (2 MB: 64 captions at
# the raw bound, in 4-byte characters).
MAX_CAPTION_FILE_BYTES = 64 * 4 * MAX_RAW_CAPTION_CHARS
# Above this share of failed records the input is probably the wrong format or column names, and
# training on the remainder would hide that.
MAX_FAILED_SHARE = 0.5
# Counted under this prefix: a bad caption of a record that still has a good one (the record is kept).
DROPPED = "caption dropped: "


class SkipCounter(Counter):
    """reason -> number of records skipped for it; `report` prints the counts in one line, with where the
    first record of each reason is (file and line, or shard and key) when the source said."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_at: dict[str, str] = {}  # reason -> where its first record is ("pairs.jsonl:12")

    def skip(self, reason: str, count: int = 1, where: str = "") -> None:
        self[reason] += count
        if where:
            self.first_at.setdefault(reason, where)

    def report(self, what: str, kept: int) -> str:
        if not self:
            return f"{what}: {kept} records kept, none skipped"
        reasons = ", ".join(f"{reason}: {n}" + (f" (first at {self.first_at[reason]})" if reason in self.first_at
                                                else "") for reason, n in sorted(self.items()))
        return f"{what}: {kept} records kept, {self.records_failed()} skipped ({reasons})"

    def records_failed(self) -> int:
        return sum(n for reason, n in self.items() if not reason.startswith(DROPPED))

    def check_enough(self, what: str, kept: int, hint: str) -> None:
        """A clear error when most records failed, instead of training on what little is left."""
        failed = self.records_failed()
        if kept == 0 or failed > MAX_FAILED_SHARE * (failed + kept):
            raise LocktuneError(f"{what}: {failed} of {failed + kept} records failed "
                                f"({', '.join(f'{r}: {n}' for r, n in sorted(self.items())) or 'no records'}); {hint}")


def print_report(counter: SkipCounter, what: str, kept: int) -> None:
    print(f"locktune: {counter.report(what, kept)}", file=sys.stderr)


def check_caption(raw: object) -> tuple[str | None, str]:
    """(cleaned caption, "") for a usable caption, else (None, reason); anything may be passed (JSON gives
    numbers, null and nested lists where a caption belongs)."""
    if not isinstance(raw, (bytes, str)):
        return None, "non-string caption"
    if len(raw) > (4 if isinstance(raw, bytes) else 1) * MAX_RAW_CAPTION_CHARS:
        return None, "caption too long"
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "non-utf8 caption"
    try:
        raw.encode("utf-8")  # text files are read with surrogateescape: undecodable bytes show up here
    except UnicodeEncodeError:
        return None, "non-utf8 caption"
    if len(raw) > MAX_RAW_CAPTION_CHARS:
        return None, "caption too long"
    text = clean_caption(raw.replace("\ufeff", ""))  # a byte-order mark starting a text file is not text
    if not text:
        return None, "empty caption"
    if len(text) > MAX_CAPTION_CHARS:
        return None, "caption too long"
    return text, ""


def check_captions(raws: list, counter: SkipCounter | None = None, where: str = "") -> tuple[list[str], str]:
    """The usable captions in order, deduplicated; when none is usable, the reason of the first bad one.

    Bad captions of a record that keeps others are counted in `counter` as "caption dropped: REASON"
    (`where`: the record's file and line, for the report).
    """
    kept: dict[str, None] = {}  # an ordered set: de-duplication stays linear in the number of captions
    reasons: list[str] = []
    for raw in raws:
        text, why = check_caption(raw)
        if text is None:
            reasons.append(why)
        else:
            kept.setdefault(text)
    if kept and counter is not None:
        for why in reasons:
            counter.skip(DROPPED + why, where=where)
    return list(kept), ("" if kept else (reasons[0] if reasons else "empty caption"))
