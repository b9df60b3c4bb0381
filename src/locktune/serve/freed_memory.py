"""Memory a large decode freed, handed back to the operating system.

glibc keeps what a thread frees in that thread's malloc arena for its next allocation.  The server decodes
uploads on its worker threads, so after a few 36-megapixel images on different threads each arena holds a
decode's worth of freed pages: resident memory grew with the number of threads that had decoded, not with the
decodes running at once that the budget (`budget.py`) bounds (measured: 0.44 GB resident after one decode,
0.91 GB after four on four threads, 0.32 GB after `malloc_trim`).  After an image of `TRIM_AFTER_PIXELS` or
more, `malloc_trim(0)` gives every arena's free pages back (a few milliseconds).  Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

TRIM_AFTER_PIXELS = 4_000_000  # 4 MP: 12 MB of RGB; smaller uploads are not worth a trim


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def give_back_freed_memory(pixels: int) -> bool:
    """After decoding an image of `pixels`: return the allocator's free pages to the OS if the image was large
    and the C library can; -> whether it did."""
    trim = _malloc_trim()
    if pixels < TRIM_AFTER_PIXELS or trim is None:
        return False
    trim(0)
    return True
