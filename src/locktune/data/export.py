"""Write any pair source to WebDataset shards in img2dataset's layout (KEY.ext + KEY.txt + KEY.json)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from locktune.data.images import FileImages
from locktune.data.pairs import PairSet
from locktune.data.record_checks import SkipCounter, print_report

# Formats every image tower's decoder reads: such files are copied byte for byte (no re-encoding loss).
RAW_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def _image_bytes(pairs: PairSet, index: int) -> tuple[bytes, str]:
    """(encoded image, extension): the original bytes where they are a raster format, else PNG.

    Original bytes are not decoded here, so a broken image is exported as it is and counted when embedded.
    """
    from locktune.data.sources.webdataset import TarImages

    images = pairs.images
    if isinstance(images, TarImages):
        return images.read_bytes(index), images.extensions[index]
    if isinstance(images, FileImages):
        suffix = Path(images.paths[index]).suffix.lower()
        if suffix in RAW_SUFFIXES:
            return Path(images.paths[index]).read_bytes(), RAW_SUFFIXES[suffix]
    image = images.load(index)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "transparency" in image.info or "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # mtime fixed: the same export gives the same bytes
    tar.addfile(info, io.BytesIO(data))


def export_webdataset(pairs: PairSet, out_dir: str | Path, shard_size: int = 1000) -> tuple[list[Path], SkipCounter]:
    """Shards `00000.tar`, `00001.tar`, ... of `shard_size` records each; captions one per line in KEY.txt.

    Each shard is written to a temporary name and renamed when complete, so a killed export never leaves a
    shard that looks finished.  An image that cannot be read is skipped and counted.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counter = SkipCounter()
    shards: list[Path] = []
    tar = None
    tmp = final = None
    written = 0
    for index in range(len(pairs)):
        try:
            data, extension = _image_bytes(pairs, index)
        except Exception as error:  # an unreadable image is counted, never fatal
            counter.skip(f"unreadable image ({type(error).__name__})")
            continue
        if tar is None or written % shard_size == 0 and written:
            if tar is not None:
                tar.close()
                os.replace(tmp, final)
                shards.append(final)
            final = out / f"{len(shards):05d}.tar"
            tmp = final.with_suffix(f".tar.tmp{os.getpid()}")
            tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
        key = f"{written:09d}"
        _add(tar, f"{key}.{extension}", data)
        _add(tar, f"{key}.txt", "\n".join(pairs.captions[index]).encode("utf-8"))
        _add(tar, f"{key}.json", json.dumps({"key": key, "source": pairs.name,
                                             "source_key": pairs.images.keys[index],
                                             "captions": pairs.captions[index]}, ensure_ascii=False).encode())
        written += 1
    if tar is not None:
        tar.close()
        os.replace(tmp, final)
        shards.append(final)
    print_report(counter, f"export of {pairs.name}", written)
    (out / "export.json").write_text(json.dumps({"source": pairs.name, "records": written, "shards": len(shards),
                                                 "shard_size": shard_size, "skipped": dict(counter),
                                                 "source_skipped": pairs.skipped, "time": time.time()}, indent=1))
    return shards, counter


def shard_pattern(shards: list[Path]) -> str:
    """The brace pattern naming these shards, e.g. `out/{00000..00003}.tar`."""
    if len(shards) == 1:
        return str(shards[0])
    return str(shards[0].parent / f"{{{shards[0].stem}..{shards[-1].stem}}}.tar")
