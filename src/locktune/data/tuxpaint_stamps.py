"""Reading Tux Paint's stamps (Debian `tuxpaint-stamps-default`), shared by the benchmarks and the training
sources built on them, and the one rule that splits them in two halves (by file stem, by sentence and by near-duplicate picture, so nothing is shared).

`X.txt` beside `X.png`/`X.svg` holds the English sentence on its first line, then `LANG.utf8=...` lines.
The top-level folder is the stamp's category.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from locktune.data.images import FileImages
from locktune.data.near_duplicates import pairs_within, signatures
from locktune.data.packages import debian_path
from locktune.data.pairs import clean_caption
from locktune.errors import LocktuneError

STAMPS = "/usr/share/tuxpaint/stamps"
HALVES = ("a", "b")


def stamps() -> list[tuple[Path, str, str]]:
    """(image path, English sentence, category folder) for every stamp with an image and a sentence,
    sorted by path."""
    root = debian_path(STAMPS, "tuxpaint-stamps-default", "Tux Paint stamps")
    rows = []
    for txt in sorted(root.rglob("*.txt")):
        image = next((p for p in (txt.with_suffix(".png"), txt.with_suffix(".svg")) if p.is_file()), None)
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        english = clean_caption(lines[0]) if lines else ""
        if image is not None and english:
            rows.append((image, english, txt.relative_to(root).parts[0]))
    return rows


def translations(image: Path) -> dict[str, str]:
    """{language: sentence} from the `LANG.utf8=...` lines of a stamp's .txt file."""
    out = {}
    for line in image.with_suffix(".txt").read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        lang, sep, text = line.partition(".utf8=")
        if sep and clean_caption(text):
            out[lang.strip()] = clean_caption(text)
    return out


def stem_key(path: Path) -> str:
    """The file stem without its variant numbering: 'frog-1', 'frog' and 'frog_02' are one picture's variants."""
    return re.sub(r"([_-]?\d+[a-z]?)+$", "", path.stem.lower()) or path.stem.lower()


def sentence_key(sentence: str) -> str:
    return re.sub(r"[\s.!?]+$", "", " ".join(sentence.lower().split()))


def stamp_groups(rows: list[tuple[Path, str, str]], near_duplicates: bool = True) -> list[list[int]]:
    """Row indices grouped so that two stamps sharing a file stem (variants aside) or an English sentence,
    or that are near-duplicate pictures (`data.near_duplicates`: recoloured copies such as the green and
    brown eye; mirror pairs such as b/d), are in one group, transitively; groups in order of their first row."""
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, (path, sentence, _) in enumerate(rows):
        for key in (("stem", stem_key(path)), ("sentence", sentence_key(sentence))):
            if key in first:
                parent[root(i)] = root(first[key])
            else:
                first[key] = i
    if near_duplicates:
        for i, j in pairs_within(signatures(FileImages([r[0] for r in rows]))):
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def stamp_half(half: str) -> list[tuple[Path, str, str]]:
    """Half `a` or half `b`: train on one, evaluate on the other.  Whole groups of `stamp_groups` go to one
    half, so no file stem, no sentence and no near-duplicate picture is in both.  Groups are dealt in path order, each to the half
    with fewer stamps of its category so far (then fewer stamps overall, then `a`): every category is in
    both halves where it has two groups, and the split depends on nothing but the installed files."""
    if half not in HALVES:
        raise LocktuneError(f"unknown Tux Paint half '{half}'; valid: {', '.join(HALVES)}")
    rows = stamps()
    per_category = {h: Counter() for h in HALVES}
    total = {h: 0 for h in HALVES}
    chosen: list[int] = []
    for group in stamp_groups(rows):
        category = rows[group[0]][2]
        side = min(HALVES, key=lambda h: (per_category[h][category], total[h], h))
        per_category[side][category] += len(group)
        total[side] += len(group)
        if side == half:
            chosen += group
    return [rows[i] for i in sorted(chosen)]
