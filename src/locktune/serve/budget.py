"""The server's shared budget for decoding uploaded images: how many decodes run at once, and how many
megapixels they hold together.

Each upload is also checked alone (`uploads.MAX_PIXELS`), but that does not bound the server: a 100 KB PNG
can decode to 6000 x 6000 (108 MB of RGB, more while it is converted and resized), and 60 of them at once
took the server past 8 GB, then to MemoryError and a crash.  So a decode first claims its megapixels (read
from the header, before any pixel is decoded) from this budget, and holds them until the image tower has
embedded it.  A claim that does not fit waits up to `wait_s` for others to finish, then is refused with
`ServerBusy` (HTTP 503 with Retry-After): a refused request costs nothing, a crashed server costs everyone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from locktune.serve.uploads import BadInput

# Two decodes at a time keep both cores of a small machine busy; 80 MP in flight is about 250 MB of decoded
# pixels plus their conversion copies, and still admits two images at the per-image limit (40 MP) together.
MAX_DECODES = 2
MAX_DECODE_MEGAPIXELS = 80.0
DECODE_WAIT_S = 1.0
RETRY_AFTER_S = 1


class ServerBusy(BadInput):
    """The decode budget is spent right now: 503, and the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_S):
        super().__init__(503, message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class DecodeBudget:
    """At most `max_decodes` claims at once, together at most `max_megapixels`; thread-safe (the endpoints
    that decode run in the server's thread pool)."""

    def __init__(self, max_decodes: int = MAX_DECODES, max_megapixels: float = MAX_DECODE_MEGAPIXELS,
                 wait_s: float = DECODE_WAIT_S):
        if max_decodes < 1 or max_megapixels <= 0 or wait_s < 0:
            raise ValueError(f"decode budget needs max_decodes >= 1, max_megapixels > 0 and wait_s >= 0; got "
                             f"{max_decodes}, {max_megapixels}, {wait_s}")
        self.max_decodes = max_decodes
        self.max_pixels = int(max_megapixels * 1_000_000)
        self.wait_s = wait_s
        self.decodes = 0  # claims held now
        self.pixels = 0  # their pixels together
        self.refused = 0  # claims refused as busy so far (for tests and /api/info)
        self.peak_pixels = 0  # the most pixels ever held at once
        self._changed = threading.Condition()

    def fits_alone(self, pixels: int) -> bool:
        """Whether an image this size could ever be admitted (on an idle server)."""
        return pixels <= self.max_pixels

    @contextlib.contextmanager
    def claim(self, pixels: int) -> Iterator[None]:
        """Hold `pixels` of the budget for the block; ServerBusy if it does not fit within `wait_s`."""
        if not self.fits_alone(pixels):  # would wait forever: the caller refuses it as too large instead
            raise ValueError(f"{pixels} pixels can never fit a budget of {self.max_pixels}")
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            while not self._fits(pixels):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.refused += 1
                    raise ServerBusy(f"the server is decoding {self.decodes} other image(s) "
                                     f"({self.pixels / 1e6:.0f} of {self.max_pixels / 1e6:.0f} megapixels in use); "
                                     f"retry in {RETRY_AFTER_S} s")
                self._changed.wait(left)
            self.decodes += 1
            self.pixels += pixels
            self.peak_pixels = max(self.peak_pixels, self.pixels)
        try:
            yield
        finally:
            with self._changed:
                self.decodes -= 1
                self.pixels -= pixels
                self._changed.notify_all()

    def _fits(self, pixels: int) -> bool:
        return self.decodes < self.max_decodes and self.pixels + pixels <= self.max_pixels

    def describe(self) -> dict:
        return {"max_decodes": self.max_decodes, "max_megapixels": self.max_pixels / 1e6, "wait_s": self.wait_s,
                "decoding": self.decodes, "refused": self.refused}

