"""WebDataset tar shards in img2dataset's layout: KEY.jpg|png|webp + KEY.txt (+ optional KEY.json).

Shards are indexed once (member offsets, captions) and images are read later by (shard, offset), so a
worker process decodes any record without scanning the tar.  A shard truncated mid-file keeps the
records before the damage; the cut record is counted as "truncated shard".  A key repeated inside a shard
(KEY.jpg KEY.txt ... KEY.jpg again) or across shards keeps its first record; each later one is counted as
"duplicate key".  A .txt or .json member over MAX_CAPTION_FILE_BYTES is not read: its record is counted as
"caption file too large".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from pathlib import Path

from PIL import Image

from locktune.data.decode import decode_image
from locktune.data.images import ImageSet
from locktune.data.pairs import PATH_SOURCES, PairSet, take_evenly
from locktune.data.record_checks import MAX_CAPTION_FILE_BYTES, SkipCounter, check_captions, print_report
from locktune.errors import LocktuneError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def expand_braces(pattern: str) -> list[str]:
    """`data/{00000..00002}.tar` -> three names (zero padding kept); `{a,b}` lists too; nested allowed."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        first, last = span.groups()
        width = len(first) if first.startswith("0") else 0
        step = 1 if int(last) >= int(first) else -1
        items = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    else:
        items = body.split(",")
    return [name for item in items for name in expand_braces(head + item + tail)]


class TarImages(ImageSet):
    """Images stored as tar members, each read by (shard path, data offset, size)."""

    def __init__(self, keys: list[str], locations: list[tuple[str, int, int]], extensions: list[str]):
        self.keys, self.locations, self.extensions = keys, locations, extensions

    def read_bytes(self, index: int) -> bytes:
        path, offset, size = self.locations[index]
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"{path}: member at offset {offset} is cut short ({len(data)} of {size} bytes)")
        return data

    def load(self, index: int) -> Image.Image:
        return decode_image(self.read_bytes(index))

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for key, (path, offset, size) in zip(self.keys, self.locations):
            digest.update(f"{key}\0{path}\0{offset}\0{size}\0".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()[:16]


def _index_shard(path: str, counter: SkipCounter) -> list[tuple[str, dict[str, tuple[int, int, bytes | None]]]]:
    """(key, {extension: (offset, size, bytes for text members)}) per record, in the shard's order."""
    records: dict[str, dict[str, tuple[int, int, bytes | None]]] = {}
    total = os.path.getsize(path)
    truncated = False
    try:
        raw = open(path, "rb")
        tar = tarfile.open(fileobj=raw, mode="r:")
    except (tarfile.ReadError, OSError):  # empty, not a tar, or compressed: the whole shard is unusable
        counter.skip("unreadable shard")
        return []
    current, dropping = None, False  # the key being read; whether its run of members repeats a record
    with raw, tar:
        while True:
            try:
                member = tar.next()
            except (tarfile.ReadError, EOFError, OSError):
                truncated = True  # a header cut or garbled: nothing after it can be trusted
                break
            if member is None:
                # tarfile also ends quietly at a header cut short or garbled, so look at what follows: a
                # complete shard ends with a zero block.
                raw.seek(tar.offset)
                tail = raw.read(512)
                truncated = len(tail) < 512 or tail.count(0) != 512
                break
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, extension = base.partition(".")
            if not dot:
                continue
            key = f"{directory}/{stem}" if directory else stem
            if key != current:
                current, dropping = key, False
            if not dropping and extension.lower() in records.get(key, {}):
                # KEY.jpg KEY.txt ... KEY.jpg: a second record with the key.  The first is kept (what was
                # indexed stays put); this one, and the members following it with the same key, are left out.
                dropping = True
                counter.skip("duplicate key", where=f"{path}: {key}")
            if member.offset_data + member.size > total:
                truncated = True
                if not dropping:
                    records.setdefault(key, {})["__cut__"] = (0, 0, None)
                break
            if dropping:  # the first record with a key is kept, later ones counted and left out
                continue
            text = None
            if extension.lower() in ("txt", "json"):
                if member.size > MAX_CAPTION_FILE_BYTES:  # not read: a caption file, not a page dump
                    counter.skip("caption file too large", where=f"{path}: {member.name} ({member.size:,} bytes)")
                    records.setdefault(key, {})["__big__"] = (0, 0, None)
                    continue
                raw.seek(member.offset_data)
                text = raw.read(member.size)
            records.setdefault(key, {})[extension.lower()] = (member.offset_data, member.size, text)
    out = []
    for key, parts in records.items():
        if "__cut__" in parts:
            counter.skip("truncated shard")
        elif "__big__" not in parts:  # counted where it was met
            out.append((key, parts))
    if truncated and not any("__cut__" in p for p in records.values()):
        counter.skip("truncated shard")
    return out


def _json_captions(data: bytes | None) -> list:
    """Captions from an img2dataset .json ("caption", or a "captions" list), whatever their type (the
    caption check counts non-strings); none when absent or unreadable."""
    try:
        meta = json.loads(data) if data else {}
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(meta, dict):
        return []
    if isinstance(meta.get("captions"), list):
        return meta["captions"]
    if meta.get("caption") is not None:
        return [meta["caption"]]
    return []


def load_shards(pattern: str, max_pairs: int = 0, quiet: bool = False) -> PairSet:
    """Every usable record of the shards `pattern` names (brace-expanded); bad records skipped and counted.

    A .txt holds one caption per line, so several captions stay with their image.
    """
    paths = expand_braces(pattern)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise LocktuneError(f"webdataset shard '{missing[0]}' does not exist ({len(missing)} of {len(paths)} "
                            f"named by '{pattern}' are missing); check the path and the brace range")
    counter = SkipCounter()
    keys: list[str] = []
    locations: list[tuple[str, int, int]] = []
    extensions: list[str] = []
    captions: list[list[str]] = []
    seen: set[str] = set()
    for path in paths:
        for key, parts in _index_shard(path, counter):
            image_ext = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
            where = f"{path}: {key}"
            if image_ext is None:
                counter.skip("missing image", where=where)
                continue
            raws: list = []
            if "txt" in parts:
                raws = parts["txt"][2].split(b"\n") if parts["txt"][2].strip(b"\n") else [b""]
            elif "json" in parts:
                raws = _json_captions(parts["json"][2])
            if not raws:
                counter.skip("missing caption", where=where)
                continue
            lines = [r for r in raws if not isinstance(r, (bytes, str)) or r.strip()]
            kept, reason = check_captions(lines or raws, counter, where)
            if not kept:
                counter.skip(reason, where=where)
                continue
            if key in seen:
                counter.skip("duplicate key", where=where)
                continue
            seen.add(key)
            offset, size, _ = parts[image_ext]
            keys.append(key)
            locations.append((str(path), offset, size))
            extensions.append(image_ext)
            captions.append(kept)
    name = f"wds:{pattern}"
    if not quiet:
        print_report(counter, name, len(keys))
    counter.check_enough(name, len(keys), "check that these are img2dataset-style shards (KEY.jpg + KEY.txt)")
    keep = take_evenly(len(keys), max_pairs)
    images = TarImages([keys[i] for i in keep], [locations[i] for i in keep], [extensions[i] for i in keep])
    return PairSet(name, images, [captions[i] for i in keep], dict(counter))


PATH_SOURCES.register("wds")(load_shards)
