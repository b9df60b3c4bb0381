"""Writes the broken-and-unusual image corpus in tests/fuzz/images (checked in; rerun to regenerate).

Files named ok_* must load (after conversion); bad_* must be skipped and counted, never crash a run.
"""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent / "images"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size (a decompression bomb in 60 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    good = png_bytes(rgb)
    (HERE / "ok_rgb.png").write_bytes(good)
    rgb.convert("CMYK").save(HERE / "ok_cmyk.jpg", format="JPEG")
    Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16)).save(HERE / "ok_16bit.png")
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    palette.save(HERE / "ok_palette_transparent.png", transparency=0)
    rgb.convert("LA").save(HERE / "ok_grey_alpha.png")
    rgb.convert("1").save(HERE / "ok_1bit.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(HERE / "ok_1x1.png")
    Image.new("RGBA", (1000, 3), (0, 0, 255, 128)).save(HERE / "ok_1000x3_alpha.png")
    (HERE / "ok_drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
                                         '<rect width="20" height="10" fill="red"/></svg>')
    (HERE / "bad_truncated.png").write_bytes(good[: len(good) // 2])
    (HERE / "bad_empty.png").write_bytes(b"")
    (HERE / "bad_random_bytes.png").write_bytes(rng.integers(0, 255, 300, dtype=np.uint8).tobytes())
    (HERE / "bad_text_named.jpg").write_text("this is a caption, not a picture\n")
    (HERE / "bad_jpeg_header_only.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    (HERE / "bad_bomb_200000x200000.png").write_bytes(png_claiming(200000, 200000))
    (HERE / "bad_broken.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><rect width=')
    (HERE / "bad_entities.svg").write_text('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaa">]>'
                                           '<svg xmlns="http://www.w3.org/2000/svg" width="2" height="2">&a;</svg>')


if __name__ == "__main__":
    main()
