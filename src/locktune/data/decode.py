"""The one image decoder every path uses: a file, bytes or a PIL image -> a bounded, upright, 8-bit image.

Training pairs, the embedding cache, evaluation benchmarks, `LitModel.encode_image` and server uploads all
decode here, so they agree on three things:

- bounds, read from the header before any pixel is decoded: at most `MAX_IMAGE_PIXELS` pixels and a long
  side at most `MAX_ASPECT_RATIO` times the short one (a 1 x 20,000 strip is a line after resizing and
  would otherwise cost a huge padded square); Pillow's own decompression-bomb error is the same refusal;
- orientation: the EXIF orientation tag is applied (phone photos are stored sideways with the tag);
- depth: 16-bit grey (modes I;16 / I) is scaled by 1/257, float images (F) from [0, 1] or [0, 255], and
  everything else converted to RGB, or RGBA where there is transparency (P with transparency, LA, PA);
  `towers.image.preprocess.on_background` composites that on a background colour, the one function that does.

An animated GIF/PNG/WebP gives its first frame.  A refusal is an `UnusableImage` whose `reason` is the
short name records are counted under.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from locktune.errors import LocktuneError

# Pillow's own default: the built-in data's 90-230 megapixel clip art has always been refused at this size.
MAX_IMAGE_PIXELS = 89_478_485
# Long side over short side.  Real pictures stay far below (panoramas ~10, banners ~30); 1000 x 3 clip art
# rules still load, a 1 x 20,000 strip does not.
MAX_ASPECT_RATIO = 1000
SVG_RENDER_SIZE = 256
SVG_SUFFIXES = (".svg", ".svgz")  # rendered from their own bytes within bounds: data/svg.py
ORIENTATION = 0x0112  # the EXIF tag

ImageSource = Union[str, Path, bytes, bytearray, Image.Image]


class UnusableImage(LocktuneError):
    """An image refused before decoding; `reason` is the short name it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def check_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """UnusableImage("image too large" | "image too thin" | "empty image") for a size out of bounds."""
    if width < 1 or height < 1:
        raise UnusableImage("empty image", f"{width}x{height} pixels")
    if width * height > max_pixels:
        raise UnusableImage("image too large", f"{width}x{height} pixels; the limit is "
                                               f"{max_pixels / 1e6:.0f} megapixels")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise UnusableImage("image too thin", f"{width}x{height} pixels; the long side may be at most "
                                              f"{MAX_ASPECT_RATIO} times the short one")


def _open(source: str | Path | bytes | bytearray, max_pixels: int) -> Image.Image:
    """Image.open (header only), bounds checked, then decoded."""
    with warnings.catch_warnings():
        # Pillow warns of a decompression bomb between its limit and twice it (our own check below refuses
        # that range by name) and of corrupt metadata (EXIF, ICC) per file: noise in a long run, not a fault.
        warnings.simplefilter("ignore")
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        except Image.DecompressionBombError as error:  # over twice Pillow's limit: refused by Image.open
            claimed = re.search(r"\((\d+) pixels\)", str(error))
            pixels = f"{int(claimed.group(1)):,} pixels" if claimed else "over twice Pillow's pixel limit"
            raise UnusableImage("image too large", f"{pixels}; the limit is {max_pixels / 1e6:.0f} megapixels") from None
    check_size(image.width, image.height, max_pixels)
    image.load()  # the first frame of an animation
    return image


def _render_svg(path: Path, max_pixels: int) -> Image.Image:
    from locktune.data.svg import render_svg  # imports cairosvg, which only SVG users need

    return render_svg(path, max_pixels)


def to_8bit(image: Image.Image) -> Image.Image:
    """RGB, or RGBA where the image has transparency; 16-bit and float pixel values scaled, not clipped."""
    mode = image.mode
    if mode == "RGBA" or (mode == "RGB" and "transparency" not in image.info):
        return image
    if mode.startswith("I"):  # I;16, I;16B, I;16L from 16-bit PNG/TIFF; I (32-bit) read as 16-bit values
        values = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info:  # P, L, 1 or RGB with a tRNS colour
        return image.convert("RGBA")
    return image.convert("RGB")  # L, 1, P, CMYK (Adobe's inverted JPEGs included), YCbCr, LAB, HSV


def upright(image: Image.Image) -> Image.Image:
    """The EXIF orientation applied (a no-op without the tag); unreadable EXIF leaves the pixels as stored."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns per corrupt EXIF block: noise in a long run
            if image.getexif().get(ORIENTATION, 1) in range(2, 9):  # else exif_transpose would only copy it
                return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block must not cost a picture whose pixels are fine
        pass
    return image


def decode_image(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """A path (SVG rendered with cairosvg, `data/svg.py`), encoded bytes or a PIL image -> bounded, upright, RGB or RGBA.

    Raises UnusableImage for a size out of bounds, and whatever Pillow raises for a file it cannot read
    (the callers that walk a dataset count both by reason; see `failure_reason`).
    """
    if isinstance(source, Image.Image):
        check_size(source.width, source.height, max_pixels)
        image = source
    elif isinstance(source, (bytes, bytearray)):
        image = _open(source, max_pixels)
    else:
        try:
            if Path(source).suffix.lower() in SVG_SUFFIXES:
                image = _render_svg(Path(source), max_pixels)
                check_size(image.width, image.height, max_pixels)
            else:
                image = _open(str(source), max_pixels)
        except UnusableImage as refused:  # name the file: the API's one-line error says which image
            raise UnusableImage(refused.reason, f"'{source}' is {refused.detail}") from None
    out = to_8bit(upright(image))
    out.format = image.format  # which decoder read it (JPEG, PNG ...), kept through the conversions
    return out


def failure_reason(error: str) -> str:
    """A short reason for the counts, from the text `f"{type(error).__name__}: {error}"` a decoder failure
    is recorded as."""
    if error.startswith("UnusableImage: "):
        return error[len("UnusableImage: "):].split(":")[0]
    if "DecompressionBomb" in error:
        return "image too large"
    if "UnidentifiedImageError" in error:
        return "not an image"
    if "truncated" in error or "cut short" in error:
        return "truncated image"
    return "unreadable image"


def on_background(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB with any transparency composited on `background` (white): what the towers see, and what plots and
    thumbnails must show (a plain RGB conversion would turn transparent areas black)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, tuple(background) + (255,))
        image = Image.alpha_composite(canvas, image)
    return image.convert("RGB")
