"""Checking what users send: images (size, real image, no decompression bombs) and label lists."""

from __future__ import annotations

import io
import re
import warnings

from PIL import Image

from locktune.data.decode import UnusableImage, check_size, decode_image

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # well above any photo; far below what would stall the server decoding it
MAX_LABELS = 1000
MAX_LABEL_CHARS = 200


class BadInput(Exception):
    """A request the user can fix; `status` is the HTTP code, the message says what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def read_image(data: bytes) -> Image.Image:
    """Bytes -> a decoded, upright RGB(A) PIL image, or BadInput (413 too big or too thin, 415 not an image)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadInput(413, f"image is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    if not data:
        raise BadInput(400, "the uploaded image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_size refuses by name
            try:
                probe = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError:  # Pillow refuses a header claiming over twice its own limit
                raise UnusableImage("image too large", f"over {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels "
                                                       "by its header") from None
            check_size(probe.width, probe.height, MAX_PIXELS)  # from the header, before any pixel is decoded
            probe.verify()  # checks the file's structure without decoding pixels
        return decode_image(data, MAX_PIXELS)  # verify() leaves the probe unusable; decode afresh
    except UnusableImage as refused:
        if refused.reason == "image too large":
            raise BadInput(413, f"image is {refused.detail.split(';')[0]}; the limit is "
                                f"{MAX_PIXELS // 1_000_000} megapixels")
        if refused.reason == "image too thin":
            raise BadInput(413, f"image is {refused.detail}; crop it or pad it nearer to a square")
        raise BadInput(415, f"the upload is not a usable image ({refused})")
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
