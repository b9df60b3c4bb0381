"""CSV / TSV / JSONL manifests: one row per (image path, caption); rows naming the same image are grouped.

Column names are found among common ones or given in the source name:
`manifest:pairs.csv?image=filepath&caption=title`.  Relative image paths are relative to the manifest.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl

from locktune.data.containment import inside
from locktune.data.images import FileImages
from locktune.data.lines import MAX_LINE_BYTES, bounded_lines
from locktune.data.pairs import PATH_SOURCES, PairSet, take_evenly
from locktune.data.record_checks import SkipCounter, check_captions, print_report
from locktune.errors import LocktuneError

IMAGE_COLUMNS = ("image", "image_path", "filepath", "file", "path", "filename")
CAPTION_COLUMNS = ("caption", "captions", "text", "title")


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise LocktuneError(f"manifest '{path}' has no {what} column '{wanted}'; its columns: {', '.join(columns)}")
        return wanted
    found = next((c for c in candidates if c in columns), None)
    if found is None:
        raise LocktuneError(f"manifest '{path}' has no {what} column (looked for {', '.join(candidates)}); its "
                            f"columns: {', '.join(columns)}; name it with '?{what}=COLUMN' after the path")
    return found


def _text_lines(path: Path, counter: SkipCounter) -> Iterator[tuple[int, str]]:
    """(line number, text) per line, each read within MAX_LINE_BYTES: a longer line is counted as "line too
    long" (file and line named) and stands as an empty line, so line numbers and the rows after it stay
    right.  Undecodable bytes are kept as surrogates (the caption check counts them), a leading byte-order
    mark dropped."""
    with open(path, "rb") as f:
        for number, line in bounded_lines(f):
            if line is None:
                counter.skip("line too long", where=f"{path}:{number} (over {MAX_LINE_BYTES // 2**20} MB)")
                yield number, "\n"
                continue
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            yield number, line.decode("utf-8", errors="surrogateescape")


def _rows(path: Path, counter: SkipCounter) -> list[tuple[int, dict]]:
    """(line number, row) for each usable row; an unparsable row counted with its line."""
    rows: list[tuple[int, dict]] = []
    lines = _text_lines(path, counter)
    if path.suffix.lower() == ".jsonl":
        for number, line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict):
                rows.append((number, row))
            else:
                counter.skip("unreadable row", where=f"{path}:{number}")
        return rows
    # csv reads the lines it is given (a quoted field may span several); an over-long one arrives blank,
    # and DictReader passes blank lines over.
    reader = csv.DictReader((line for _, line in lines), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as error:  # a field over csv's size limit: that row only, reading goes on
            counter.skip("unreadable row", where=f"{path}:{reader.line_num} ({error})")
            continue
        rows.append((reader.line_num, row))


def read_manifest(path: Path, base: Path, image_column: str | None = None, caption_column: str | None = None,
                  max_pairs: int = 0, name: str | None = None, quiet: bool = False,
                  within: Path | None = None) -> PairSet:
    """Pairs from a manifest file; a missing image file or unusable caption skips the row, counted.

    `within` (a resolved folder): an image path that leads out of it (`..`, an absolute path, a link) is
    counted as "outside the folder" - a folder source's captions file names the folder's own images."""
    if not path.is_file():
        raise LocktuneError(f"manifest '{path}' does not exist; give a .csv, .tsv or .jsonl file")
    counter = SkipCounter()
    rows = _rows(path, counter)
    columns = list(rows[0][1].keys()) if rows else []
    if not rows:
        raise LocktuneError(f"manifest '{path}' has no rows")
    image_col = _pick(columns, image_column, IMAGE_COLUMNS, "image", path)
    caption_col = _pick(columns, caption_column, CAPTION_COLUMNS, "caption", path)
    grouped: dict[str, dict[str, None]] = {}  # image -> its captions, in order (a dict: linear de-duplication)
    exists: dict[str, bool] = {}
    kept_rows = 0  # the failure share is over rows, since a row (not an image) is a record here
    for number, row in rows:
        where = f"{path}:{number}"
        value = row.get(image_col)
        if not isinstance(value, str) or not value.strip():
            counter.skip("missing image path", where=where)
            continue
        image = str(base / value.strip())
        if within is not None and not inside(Path(image), within):
            counter.skip("outside the folder", where=f"{where} ({value.strip()!r})")
            continue
        if image not in exists:
            exists[image] = Path(image).is_file()
        if not exists[image]:
            counter.skip("missing image file", where=where)
            continue
        raw = row.get(caption_col)
        if raw is None:
            counter.skip("missing caption", where=where)
            continue
        kept, reason = check_captions(raw if isinstance(raw, list) else [raw], counter, where)
        if not kept:
            counter.skip(reason, where=where)
            continue
        kept_rows += 1
        grouped.setdefault(image, {}).update(dict.fromkeys(kept))
    label = name or f"manifest:{path}"
    if not quiet:
        print_report(counter, label, kept_rows)
    counter.check_enough(label, kept_rows, f"check the column names ({image_col}, {caption_col}) and paths")
    paths = list(grouped)
    keep = take_evenly(len(paths), max_pairs)
    return PairSet(label, FileImages([paths[i] for i in keep]), [list(grouped[paths[i]]) for i in keep], dict(counter))


def load_manifest(spec: str, max_pairs: int = 0) -> PairSet:
    """`file.csv`, optionally followed by `?image=COLUMN&caption=COLUMN`."""
    location, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"image", "caption"}
    if unknown:
        raise LocktuneError(f"manifest '{location}': unknown option(s) {', '.join(sorted(unknown))}; "
                            "valid: image=COLUMN, caption=COLUMN")
    path = Path(location)
    return read_manifest(path, path.parent, options.get("image"), options.get("caption"), max_pairs)


PATH_SOURCES.register("manifest")(load_manifest)
