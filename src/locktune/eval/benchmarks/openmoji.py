"""OpenMoji (npm `openmoji`): open-source emoji drawings, classified zero-shot by their Unicode group.

Training uses openclipart and Google's emoji (`emoji-datasource-google`), never OpenMoji, so this is a
held-out set of drawings of the same kind of thing in another artist's style.  `data/openmoji.json` lists
every emoji (hexcode, annotation, tags, group, subgroups, skintone); the image is `color/svg/HEXCODE.svg`.
"""

from __future__ import annotations

import json
from pathlib import Path

from locktune.data.images import FileImages
from locktune.data.packages import npm_package_path
from locktune.errors import LocktuneError
from locktune.eval.benchmarks.base import BENCHMARKS, ClassificationSet, balanced_subset
from locktune.eval.templates import GENERAL

OPENMOJI_VERSION = "17.0.0"

# Unicode's top-level emoji groups -> the class name the prompts use (said after "a"/"an ... of a").
# Left out, as not picture categories:
# - "component": skin-tone swatches and hair-style pieces that only combine into other emoji;
# - "extras-openmoji": OpenMoji's own additions, whose subgroups cut across the Unicode groups
#   (food-drink, flags, travel-places, objects ...) or are brands and UI elements;
# - "extras-unicode": proposed/unassigned code points, mostly regional-indicator letters, subdivision
#   flags and other symbols, again overlapping the real groups.
GROUP_NAMES = {
    "smileys-emotion": "smiley face",
    "people-body": "person or body part",
    "animals-nature": "animal or plant",
    "food-drink": "food or drink",
    "travel-places": "place or vehicle",
    "activities": "sport or game",
    "objects": "object",
    "symbols": "symbol",
    "flags": "flag",
}

# GENERAL's drawing/icon/clip-art prompts; its photo prompt does not describe an emoji.
TEMPLATES = [t for t in GENERAL if "photo" not in t]


def openmoji_entries() -> list[tuple[Path, str]]:
    """(colour SVG, group id) for every emoji of a kept group that is not a skin-tone variant.

    A variant has a non-empty `skintone` (1..5, or "1,2" for couples); its base emoji (skintone "") stays.
    """
    root = npm_package_path("openmoji", OPENMOJI_VERSION, "the OpenMoji benchmark")
    table = root / "data" / "openmoji.json"
    try:
        entries = json.loads(table.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LocktuneError(f"benchmark 'openmoji_groups': cannot read '{table}' ({error})")
    rows = []
    for entry in entries:
        if str(entry.get("skintone") or "").strip() or entry.get("group") not in GROUP_NAMES:
            continue
        svg = root / "color" / "svg" / f"{entry['hexcode']}.svg"
        if not svg.is_file():
            raise LocktuneError(f"benchmark 'openmoji_groups': '{svg}' is listed in {table.name} but does not exist")
        rows.append((svg, entry["group"]))
    return rows


@BENCHMARKS.register("openmoji_groups")
def openmoji_groups(max_images: int = 0) -> ClassificationSet:
    rows = openmoji_entries()
    groups = list(GROUP_NAMES)
    labels = [groups.index(group) for _, group in rows]
    keep = balanced_subset(labels, max_images)
    return ClassificationSet("openmoji_groups", FileImages([rows[i][0] for i in keep]), [labels[i] for i in keep],
                             [GROUP_NAMES[g] for g in groups], TEMPLATES)
