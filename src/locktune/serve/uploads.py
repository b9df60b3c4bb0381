"""Checking what users send: images (size, real image, no decompression bombs) and label lists."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import Iterator

from PIL import Image

from locktune.data.decode import UnusableImage, check_size, decode_image

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # well above any photo; far below what would stall the server decoding it
MAX_LABELS = 1000
MAX_LABEL_CHARS = 200


class BadInput(Exception):
    """A request the user can fix; `status` is the HTTP code, the message says what to change."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After on a 503


def image_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an upload from its header, its bounds and file structure checked without decoding a
    pixel (what the decode budget is claimed by); BadInput (413 too big or too thin, 415 not an image)."""
    _check_bytes(data)
    with _refusals(max_pixels):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_size refuses by name
            try:
                probe = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError:  # Pillow refuses a header claiming over twice its own limit
                raise UnusableImage("image too large", f"over {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels "
                                                       "by its header") from None
            check_size(probe.width, probe.height, max_pixels)
            probe.verify()  # checks the file's structure without decoding pixels
        return probe.width, probe.height


def read_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes -> a decoded, upright RGB(A) PIL image, or BadInput (413 too big or too thin, 415 not an image)."""
    image_size(data, max_pixels)
    with _refusals(max_pixels):
        return decode_image(data, max_pixels)  # verify() left the probe unusable; decode afresh


def _check_bytes(data: bytes) -> None:
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadInput(413, f"image is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    if not data:
        raise BadInput(400, "the uploaded image is empty")


@contextlib.contextmanager
def _refusals(max_pixels: int) -> Iterator[None]:
    """Pillow's and the decoder's refusals -> BadInput with the code and words a user can act on."""
    try:
        yield
    except BadInput:
        raise
    except UnusableImage as refused:
        if refused.reason == "image too large":
            raise BadInput(413, f"image is {refused.detail.split(';')[0]}; the limit is "
                                f"{max_pixels // 1_000_000} megapixels")
        if refused.reason == "image too thin":
            raise BadInput(413, f"image is {refused.detail}; crop it or pad it nearer to a square")
        raise BadInput(415, f"the upload is not a usable image ({refused})")
    except MemoryError:  # not the user's fault: let the server's 500 handler count it
        raise
    except Exception:
        raise BadInput(415, "the upload is not an image Pillow can read (PNG, JPEG, GIF, WebP, BMP ...)")


def parse_labels(text: str | list) -> list[str]:
    """Labels typed by a user, one per line or comma-separated (or a JSON list) -> cleaned, de-duplicated."""
    parts = text if isinstance(text, list) else re.split(r"[\n,]", text or "")
    labels, seen = [], set()
    for part in parts:
        if not isinstance(part, str):
            raise BadInput(422, "labels must be strings")
        label = " ".join(part.split())
        if label and label.lower() not in seen:
            seen.add(label.lower())
            labels.append(label)
    if not labels:
        raise BadInput(422, "give at least one label (one per line, or separated by commas)")
    if len(labels) > MAX_LABELS:
        raise BadInput(422, f"{len(labels)} labels given; the limit is {MAX_LABELS}")
    if any(len(label) > MAX_LABEL_CHARS for label in labels):
        raise BadInput(422, f"a label is longer than {MAX_LABEL_CHARS} characters")
    return labels
