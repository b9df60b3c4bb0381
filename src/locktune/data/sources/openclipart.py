"""OpenClipart (Debian `openclipart-png` + `openclipart-svg`): clip art captioned by its title and keywords.

Each PNG has an SVG twin at the same relative path whose metadata holds `dc:title`, `dc:subject`
keywords and sometimes `dc:description`.  Parsing 180 MB of SVG takes seconds, so the parsed list is
kept in the locktune cache, keyed by the package's file list.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections import Counter
from pathlib import Path

from locktune.runtime.location import cache_root
from locktune.data.images import FileImages
from locktune.data.packages import debian_path
from locktune.data.pairs import PAIR_SOURCES, PairSet, clean_caption, take_evenly

PNG_ROOT = "/usr/share/openclipart/png"
SVG_ROOT = "/usr/share/openclipart/svg"
# Keywords that describe the file, not the picture.
_UNINFORMATIVE = {"unsorted", "clip art", "clipart", "image", "media", "png", "svg", "public domain", "externalsource",
                  "openclipart", "remix", "line art", ""}
COLLECTION_TITLE_MIN_FILES = 5
_WORK = re.compile(r"<cc:Work\b.*?</cc:Work>", re.S)
_TITLE = re.compile(r"<dc:title>(.*?)</dc:title>", re.S)
_DESCRIPTION = re.compile(r"<dc:description>(.*?)</dc:description>", re.S)
_SUBJECT = re.compile(r"<dc:subject>(.*?)</dc:subject>", re.S)
_ITEM = re.compile(r"<rdf:li>(.*?)</rdf:li>", re.S)


def _text(raw: str) -> str:
    return clean_caption(html.unescape(re.sub(r"<[^>]+>", " ", raw)))


def parse_svg_metadata(svg: str) -> tuple[str, list[str], str]:
    """(title, keywords, description) of the work described in an SVG's RDF metadata."""
    work = _WORK.search(svg)
    block = work.group(0) if work else svg
    title = _TITLE.search(block)
    description = _DESCRIPTION.search(block)
    subject = _SUBJECT.search(block)
    keywords = [_text(k) for k in _ITEM.findall(subject.group(1))] if subject else []
    keywords = [k for k in keywords if k.lower() not in _UNINFORMATIVE]
    return (_text(title.group(1)) if title else "", keywords, _text(description.group(1)) if description else "")


def captions_for(title: str, keywords: list[str], description: str, folder: str) -> list[str]:
    """Several captions per image: the title, the title with keywords, and the description if short."""
    base = title or " ".join(keywords[:3])
    if not base:
        return []
    caps = [base]
    if keywords:
        caps.append(f"{base}: {', '.join(keywords[:6])}")
    if folder:
        caps.append(f"{base}, {folder}")
    if description and len(description) < 200 and description.lower() != base.lower():
        caps.append(description)
    return caps


def name_from_file(path: Path) -> str:
    """'3floppy_unmount.png' -> '3floppy unmount'; trailing numbering like '_01' dropped."""
    stem = re.sub(r"([_-]?\d+[a-z]?)+$", "", path.stem)
    return clean_caption(stem.replace("-", " ")) or path.stem


def _index(png_root: Path, svg_root: Path) -> list[tuple[str, list[str]]]:
    pngs = sorted(png_root.rglob("*.png"))
    listing = hashlib.sha256("\n".join(str(p) for p in pngs).encode()).hexdigest()[:16]
    index_file = cache_root() / "sources" / f"openclipart-{listing}.json"
    if index_file.is_file():
        return json.loads(index_file.read_text())
    parsed = []
    for png in pngs:
        relative = png.relative_to(png_root)
        svg = svg_root / relative.with_suffix(".svg")
        if svg.is_file():
            parsed.append((png, relative, *parse_svg_metadata(svg.read_text(errors="replace"))))
    # A title shared by many files names a collection ("Part of the Flat Icon Collection"), not the
    # picture; for those the file name says more.
    title_counts = Counter(title.lower() for _, _, title, _, _ in parsed)
    rows = []
    for png, relative, title, keywords, description in parsed:
        if title_counts[title.lower()] >= COLLECTION_TITLE_MIN_FILES:
            title = name_from_file(png)
        folder = " ".join(relative.parent.parts).replace("_", " ").replace("-", " ")
        caps = captions_for(title, keywords, description, folder)
        if caps:
            rows.append((str(png), caps))
    index_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(index_file)
    return rows


@PAIR_SOURCES.register("openclipart")
def openclipart_pairs(max_pairs: int = 0) -> PairSet:
    png_root = debian_path(PNG_ROOT, "openclipart-png", "pair source 'openclipart'")
    svg_root = debian_path(SVG_ROOT, "openclipart-svg", "pair source 'openclipart'")
    rows = _index(png_root, svg_root)
    keep = take_evenly(len(rows), max_pairs)
    return PairSet("openclipart", FileImages([rows[i][0] for i in keep]), [rows[i][1] for i in keep])
