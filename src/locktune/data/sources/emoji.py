"""Google's emoji (npm `emoji-datasource-google@16.0.0`): 64x64 PNGs captioned by their Unicode names."""

from __future__ import annotations

import json

from locktune.data.images import FileImages
from locktune.data.packages import npm_package_path
from locktune.data.pairs import PAIR_SOURCES, PairSet, clean_caption, take_evenly


@PAIR_SOURCES.register("emoji")
def emoji_pairs(max_pairs: int = 0) -> PairSet:
    root = npm_package_path("emoji-datasource-google", "16.0.0", "pair source 'emoji'")
    entries = json.loads((root / "emoji.json").read_text())
    paths, captions = [], []
    for entry in sorted(entries, key=lambda e: e["sort_order"]):
        path = root / "img" / "google" / "64" / entry["image"]
        name = entry.get("name") or ""
        if not entry.get("has_img_google") or not path.is_file() or not name.strip():
            continue
        caps = [clean_caption(name.lower())]
        shorts = [clean_caption(s.replace("-", " ")) for s in entry.get("short_names", [])]
        caps += [s for s in shorts if s and s not in caps]
        subcategory = clean_caption((entry.get("subcategory") or "").replace("-", " "))
        if subcategory:
            caps.append(f"{caps[0]}, {subcategory}")
        paths.append(path)
        captions.append(caps)
    keep = take_evenly(len(paths), max_pairs)
    return PairSet("emoji", FileImages([paths[i] for i in keep]), [captions[i] for i in keep])
