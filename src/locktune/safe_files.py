"""A safetensors file checked from its header before any tensor is read.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON naming each tensor's dtype,
shape and byte range, then the bytes.  A truncated download, a header that lies about a shape, or a length
of 2^62 otherwise reaches the Rust reader (a `SafetensorError` traceback) or sizes an allocation from the
lie.  Here each claim is checked against the file itself: the header fits in the file, every tensor's
shape x dtype size is exactly its byte range, and every range lies inside the file without overlapping
another.  A file that fails is one line naming it and what to do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from locktune.errors import LocktuneError

# safetensors' own reader refuses headers above 100 MB; a real one (thousands of tensors) is a few hundred KB.
MAX_HEADER_BYTES = 100_000_000
# Bits per element of every dtype the format defines (sub-byte float formats included).
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64, "C64": 64,
              "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


class DamagedFile(ValueError):
    """What is wrong with the file, in words (the caller adds its name and the remedy)."""


def safetensors_header(path: str | Path) -> dict[str, dict]:
    """The file's tensors {name: {dtype, shape, data_offsets}} after checking every claim against the file's
    size; DamagedFile says what does not hold.  Reads the header only, never a tensor."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DamagedFile(f"it is {size} bytes, shorter than the 8-byte header length")
        length = int.from_bytes(head, "little")
        if length > size - 8 or length > MAX_HEADER_BYTES:
            raise DamagedFile(f"its header claims {length:,} bytes but the file holds {size:,} in all"
                              if length > size - 8 else f"its header claims {length:,} bytes, above the "
                              f"{MAX_HEADER_BYTES:,} any safetensors reader accepts")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedFile(f"its header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise DamagedFile("its header is not a JSON object")
    data = size - 8 - length
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    ranges = []
    for name, entry in tensors.items():
        ranges.append((*_byte_range(name, entry), name))
    end = 0
    for begin, stop, name in sorted(ranges):
        if stop > data:
            raise DamagedFile(f"tensor '{name}' needs bytes {begin:,}-{stop:,} but the file holds {data:,} after "
                              "its header (the file is truncated)")
        if begin < end:
            raise DamagedFile(f"tensor '{name}' overlaps another tensor's bytes")
        end = stop
    return tensors


def _byte_range(name: str, entry) -> tuple[int, int]:
    """(begin, end) of one tensor, checked to be exactly its shape x dtype size."""
    if not isinstance(entry, dict):
        raise DamagedFile(f"tensor '{name}' has no dtype/shape/offsets entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise DamagedFile(f"tensor '{name}' has dtype {dtype!r}, which safetensors does not define")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise DamagedFile(f"tensor '{name}' has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
        raise DamagedFile(f"tensor '{name}' has byte range {offsets!r}, not [begin, end]")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits != (offsets[1] - offsets[0]) * 8:
        raise DamagedFile(f"tensor '{name}' claims shape {shape} of {dtype} ({bits // 8:,} bytes) but spans "
                          f"{offsets[1] - offsets[0]:,} bytes (the header lies about its shape)")
    return offsets[0], offsets[1]


def check_safetensors(path: str | Path, where: str, remedy: str) -> dict[str, dict]:
    """`safetensors_header`, with a damaged file as one LocktuneError naming it, what is wrong and `remedy`
    (e.g. "download it again"); `where` names what reads it (a tower, a saved model)."""
    try:
        return safetensors_header(path)
    except DamagedFile as problem:
        raise LocktuneError(f"{where}: '{path}' is not a readable safetensors file: {problem}; {remedy}") from None
    except OSError as error:
        raise LocktuneError(f"{where}: cannot read '{path}' ({error.strerror or error}); {remedy}") from None


def tensor_bytes(header: dict[str, dict]) -> int:
    """The bytes every tensor of a checked header holds."""
    return sum(entry["data_offsets"][1] - entry["data_offsets"][0] for entry in header.values())
