"""Reading Tux Paint's stamps (Debian `tuxpaint-stamps-default`), shared by the benchmarks and the training
sources built on them, and the one rule that splits them in two halves.

`X.txt` beside `X.png`/`X.svg` holds the English sentence on its first line, then `LANG.utf8=...` lines.
The top-level folder is the stamp's category.
"""

from __future__ import annotations

from pathlib import Path

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


def stamp_half(half: str) -> list[tuple[Path, str, str]]:
    """Half `a` (rows 0, 2, 4, ... of `stamps()`) or half `b` (rows 1, 3, 5, ...): train on one, evaluate on
    the other.  Alternate rows of the path-sorted list put every category (folder) in both halves, and the
    split depends on nothing but the installed files."""
    if half not in HALVES:
        raise LocktuneError(f"unknown Tux Paint half '{half}'; valid: {', '.join(HALVES)}")
    return stamps()[HALVES.index(half)::2]
