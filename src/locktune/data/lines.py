"""Text files read a line at a time with a bound on each line's bytes, so one 200 MB line (a scraped page
pasted into a caption column) costs a bounded buffer and a skip, not gigabytes of memory."""

from __future__ import annotations

from typing import BinaryIO, Iterator

# A manifest line holds a path, a few captions of at most MAX_CAPTION_CHARS and, from img2dataset-style
# exports, some metadata: far below this.
MAX_LINE_BYTES = 2**20
CHUNK_BYTES = 2**16


def bounded_lines(f: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, the line's bytes with its newline) for each line of a binary file; None in
    place of a line longer than `limit` bytes, whose rest is read in chunks and dropped, never held."""
    number, buffer, overlong = 0, b"", False
    while True:
        chunk = f.read(CHUNK_BYTES)
        if not chunk:
            if buffer or overlong:
                yield number + 1, None if overlong else buffer
            return
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            number += 1
            yield number, (None if overlong or end + 1 - start > limit else buffer[start:end + 1])
            overlong, start = False, end + 1
        buffer = buffer[start:]
        if len(buffer) > limit:  # no newline within the bound: this line is dropped as it streams past
            overlong, buffer = True, b""
