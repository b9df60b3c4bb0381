"""A corpus of hostile and odd image files, written fresh into a folder (tiny files, a few hundred KB in all).

Thought up as an attacker (bombs, lies in headers, files that are not what their name says) and as a
phone camera (EXIF rotations, 16-bit, CMYK, animations, alpha).  `write_corpus` returns, per file name,
what must happen: "ok" (it loads), or the reason it must be counted under.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# 8 colours in a 2 x 4 grid of 8 x 8 blocks: 32 x 16 px, so every EXIF rotation and mirror is visible.
BLOCK_COLOURS = np.array([[(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20)],
                          [(20, 230, 230), (230, 20, 230), (120, 60, 10), (10, 60, 120)]], dtype=np.uint8)


def stored_blocks() -> np.ndarray:
    """The pixels as stored in the file, before the orientation tag is applied: [16, 32, 3]."""
    return np.repeat(np.repeat(BLOCK_COLOURS, 8, axis=0), 8, axis=1)


def exif_upright(stored: np.ndarray, orientation: int) -> np.ndarray:
    """How a viewer shows `stored` for an EXIF orientation, written from the TIFF/EXIF specification:
    1 as stored, 2 mirrored left-right, 3 turned 180, 4 mirrored top-bottom, 5 transposed, 6 turned 90 clockwise,
    7 transversed, 8 turned 90 anticlockwise."""
    return {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
            5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
            7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}[orientation](stored)


def jpeg_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored_blocks()).save(buffer, "JPEG", quality=100, subsampling=0, exif=exif.tobytes())
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, depth: int, colour_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written byte by byte (so its header may say anything); `rows` default to all zero,
    compressed as a stream so a huge honest image (a real decompression bomb) costs no memory here."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    if rows is None:
        compressor, row = zlib.compressobj(9), b"\0" * (1 + width * channels * depth // 8)
        body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    else:
        body = zlib.compress(rows)
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG of `values` (uint16, [h, w] grey, [h, w, 3] RGB or [h, w, 4] RGBA)."""
    h, w = values.shape[:2]
    colour_type = {2: 0, 3: 2, 4: 6}[values.ndim if values.ndim == 2 else values.shape[2]]
    big_endian = values.astype(">u2").reshape(h, -1)
    return raw_png(w, h, 16, colour_type, b"".join(b"\0" + big_endian[y].tobytes() for y in range(h)))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


GREY16 = (np.arange(24 * 10).reshape(10, 24) * 273).astype(np.uint16)  # 0 .. 65247, every step of 1/257 hit
RGB16 = np.stack([GREY16, GREY16[:, ::-1], np.full_like(GREY16, 40000)], axis=2)
NON_UTF8_NAME = os.fsdecode(b"ok_non_utf8_\xff\xfe.png")
NON_UTF8_BAD_NAME = os.fsdecode(b"bad_non_utf8_\xe9t\xe9.jpg")  # Latin-1 bytes, as old cameras and zips write


def write_corpus(folder: Path) -> dict[str, str]:
    """Every file of the corpus into `folder`; name -> "ok" or the reason it is counted under."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    good_png, good_jpeg = encoded(rgb, "PNG"), encoded(rgb, "JPEG", quality=90)
    red, blue = Image.new("RGB", (12, 8), (255, 0, 0)), Image.new("RGB", (12, 8), (0, 0, 255))
    palette_alpha = rgb.convert("P")
    files: dict[str, tuple[bytes, str]] = {
        # a phone camera
        **{f"ok_exif_orientation_{k}.jpg": (jpeg_with_orientation(k), "ok") for k in range(1, 9)},
        "ok_exif_orientation_9_invalid.jpg": (jpeg_with_orientation(9), "ok"),
        "ok_exif_garbage.jpg": (encoded(rgb, "JPEG", exif=b"Exif\0\0II*\0\xff\xff\xff\x7fgarbage"), "ok"),
        "ok_exif_cut_short.jpg": (encoded(rgb, "JPEG", exif=b"Exif\0\0MM"), "ok"),
        "ok_grey_16bit.png": (png16(GREY16), "ok"),
        "ok_rgb_16bit.png": (png16(RGB16), "ok"),
        "ok_rgba_16bit.png": (png16(np.concatenate([RGB16, np.full_like(GREY16, 65535)[..., None]], axis=2)), "ok"),
        "ok_cmyk.jpg": (encoded(rgb.convert("CMYK"), "JPEG"), "ok"),
        "ok_progressive.jpg": (encoded(rgb, "JPEG", progressive=True), "ok"),
        "ok_grey_alpha.png": (encoded(rgb.convert("LA"), "PNG"), "ok"),
        "ok_palette_transparency.png": (encoded(palette_alpha, "PNG", transparency=0), "ok"),
        "ok_palette_transparency.gif": (encoded(palette_alpha, "GIF", transparency=0), "ok"),
        "ok_rgb_trns_colour.png": (encoded(rgb, "PNG", transparency=(0, 0, 0)), "ok"),
        "ok_1bit.png": (encoded(rgb.convert("1"), "PNG"), "ok"),
        "ok_animated.gif": (encoded(red, "GIF", save_all=True, append_images=[blue], duration=100), "ok"),
        "ok_animated_apng.png": (encoded(red, "PNG", save_all=True, append_images=[blue], duration=100), "ok"),
        "ok_webp.webp": (encoded(rgb, "WEBP", lossless=True), "ok"),
        "ok_bmp.bmp": (encoded(rgb, "BMP"), "ok"),
        "ok_1x1.png": (encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "ok"),
        "ok_1x500.png": (encoded(Image.new("L", (1, 500), 30), "PNG"), "ok"),
        "ok_500x1.png": (encoded(Image.new("L", (500, 1), 30), "PNG"), "ok"),
        "ok_png_named.jpg": (good_png, "ok"),  # wrong extension: the content decides
        "ok_jpeg_named.png": (good_jpeg, "ok"),
        NON_UTF8_NAME: (good_png, "ok"),
        # an attacker, or a broken download
        "bad_zero_bytes.png": (b"", "not an image"),
        "bad_text_named.jpg": (b"this is a caption, not a picture\n", "not an image"),
        "bad_html_named.png": (b"<!doctype html><title>404 Not Found</title>", "not an image"),
        NON_UTF8_BAD_NAME: (b"\xff\xd8\xff\xe0" + b"\0" * 40, "not an image"),  # a JPEG header and nothing more
        "bad_random_bytes.jpg": (rng.integers(0, 255, 300, dtype=np.uint8).tobytes(), "not an image"),
        "bad_truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "truncated image"),
        "bad_truncated.png": (good_png[: len(good_png) // 2], "truncated image"),
        "bad_thin_1x20000.png": (encoded(Image.new("L", (1, 20_000), 128), "PNG"), "image too thin"),
        "bad_thin_20000x1.png": (encoded(Image.new("L", (20_000, 1), 128), "PNG"), "image too thin"),
        "bad_header_claims_200000x200000.png": (raw_png(200_000, 200_000, 8, 2, b"\0" * 16), "image too large"),
        "bad_header_claims_10000x10000.png": (raw_png(10_000, 10_000, 8, 0, b"\0" * 16), "image too large"),
        # honest and tiny on disk: 12,000 x 8,000 black pixels (96 megapixels) in about 100 KB
        "bad_decompression_bomb.png": (raw_png(12_000, 8_000, 1, 0), "image too large"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: outcome for name, (_, outcome) in files.items()}
