"""SVG rendering that only ever reads the file it was given, within bounds on bytes, elements and time.

cairosvg is handed the file's BYTES, never a URL built from its path: a URL would decode `%2e%2e%2f` in a
file name to `../` (rendering another file), `%41` to `A`, and cut the name at `#`.  Everything the
document itself refers to goes through `_fetch`: `data:` URLs are decoded in memory, any other reference
(a file, a web address) draws nothing, and XML entities are refused by cairosvg's own parser
(defusedxml, `unsafe=False`).

Before cairosvg sees the document:
- a gzip (.svgz) body is inflated at most `MAX_SVG_BYTES` (a 1 MB file may inflate to gigabytes);
- the parsed tree is costed as cairosvg would draw it, each `<use>` counting its target's whole subtree
  again (nested `<use>` fans out like "billion laughs") and each embedded `data:` SVG its own document;
  past `MAX_SVG_ELEMENTS` it is refused, as is a reference cycle;
- an embedded raster image is bounded by its header like any other image.
Rendering itself is stopped after `SVG_RENDER_SECONDS` where a timer can be set (the main thread).
Each refusal is an `UnusableImage`, counted by reason by whoever walks a dataset.
"""

from __future__ import annotations

import gzip
import io
import re
import signal
import threading
import time
import zlib
from pathlib import Path
from urllib.request import urlopen
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from PIL import Image

from locktune.data.decode import SVG_RENDER_SIZE, UnusableImage, check_size

# Inflated document size.  Of the 19,827 OpenClipart, npm emoji and Tux Paint SVGs on the build machine
# the largest is 1.7 MB.
MAX_SVG_BYTES = 32 * 2**20
# Elements drawn, `<use>` targets counted once per use.  The most among those 19,827 files is 12,698
# (OpenClipart's strawberry_border.svg); cairosvg's own cap, 100,000 `<use>` draws, costs ~30 s of CPU.
MAX_SVG_ELEMENTS = 50_000
# Documents inside documents (data: SVGs in <image> or <use>): real files have at most one level.
MAX_SVG_NESTING = 3
# Wall-clock bound on one render, where SIGALRM can be used; the element bound is the portable one.
SVG_RENDER_SECONDS = 20.0
GZIP_MAGIC = b"\x1f\x8b"
EMPTY_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def read_svg_file(path: Path) -> bytes:
    """The file's bytes (at most MAX_SVG_BYTES), inflated if gzip-compressed."""
    with open(path, "rb") as f:
        data = f.read(MAX_SVG_BYTES + 1)
    if len(data) > MAX_SVG_BYTES:
        raise UnusableImage("svg too large", f"over {MAX_SVG_BYTES // 2**20} MB")
    return inflate(data)


def inflate(data: bytes) -> bytes:
    """gzip layers removed, reading at most MAX_SVG_BYTES from each: a bomb is refused after that many
    bytes of work, not after inflating all of it."""
    for _ in range(MAX_SVG_NESTING):
        if not data.startswith(GZIP_MAGIC):
            return data
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                data = f.read(MAX_SVG_BYTES + 1)
        except (OSError, EOFError, zlib.error) as error:
            raise UnusableImage("unreadable svg", f"broken gzip data ({error})") from None
        if len(data) > MAX_SVG_BYTES:
            raise UnusableImage("svg too large", f"over {MAX_SVG_BYTES // 2**20} MB once inflated (gzip)")
    raise UnusableImage("svg too large", f"gzip inside gzip more than {MAX_SVG_NESTING} deep")


def _data_url(href: str) -> bytes | None:
    """The bytes of a data: URL (already in memory, so bounded by the file), None for anything else."""
    if not href.strip().lower().startswith("data:"):
        return None
    try:
        return urlopen(href.strip()).read()  # urllib decodes data: URLs itself; nothing is fetched
    except (OSError, ValueError):
        return b""


def _is_svg(data: bytes) -> bool:
    return data.startswith(GZIP_MAGIC) or b"<svg" in data[:4096]


def _parse(data: bytes) -> Element:
    try:
        return fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise UnusableImage("unsafe svg", "XML with entities or external references, which are not read "
                                          f"({type(error).__name__})") from None
    except ParseError as error:
        raise UnusableImage("unreadable svg", f"not well-formed XML ({error})") from None


def _href(element: Element) -> str:
    return element.get(XLINK_HREF) or element.get("href") or ""


def drawn_elements(data: bytes, max_pixels: int, depth: int = 0) -> int:
    """How many elements cairosvg would draw for this (inflated) document; UnusableImage past the bounds.

    A DAG walk with memo: an element costs 1 + its children + (for `<use>`) its target, or (for a data:
    SVG in `<image>`/`<use>`) that document's cost.  Iterative, so deep nesting cannot exhaust the stack."""
    if depth >= MAX_SVG_NESTING:
        raise UnusableImage("svg too complex", f"SVG documents nested more than {MAX_SVG_NESTING} deep")
    root = _parse(data)
    if depth == 0:
        _check_declared_shape(root, max_pixels)
    by_id = {e.get("id"): e for e in root.iter() if e.get("id")}
    cost: dict[int, int] = {}
    busy: set[int] = set()
    extras: dict[int, tuple[Element | None, int]] = {}

    def extra(element: Element) -> tuple[Element | None, int]:
        if id(element) not in extras:
            extras[id(element)] = reference(element)
        return extras[id(element)]

    def reference(element: Element) -> tuple[Element | None, int]:
        """(the element a `<use>` draws again, or None; the cost of an embedded document)."""
        tag = element.tag.rpartition("}")[2] if isinstance(element.tag, str) else ""
        if tag not in ("use", "image"):
            return None, 0
        href = _href(element).strip()
        if tag == "use" and href.startswith("#"):
            return by_id.get(href[1:]), 0
        embedded = _data_url(href)
        if not embedded:
            return None, 0
        if _is_svg(embedded):
            return None, drawn_elements(inflate(embedded), max_pixels, depth + 1)
        try:  # a raster image: bounded by its header, as every image is
            with Image.open(io.BytesIO(embedded)) as picture:
                check_size(picture.width, picture.height, max_pixels)
        except UnusableImage:
            raise
        except Image.DecompressionBombError:
            raise UnusableImage("image too large", "an SVG embedding an image over twice Pillow's pixel "
                                                   "limit") from None
        except Exception:  # cairosvg skips what it cannot read
            pass
        return None, 0

    stack: list[tuple[Element, bool]] = [(root, False)]
    while stack:
        element, expanded = stack.pop()
        key = id(element)
        if key in cost:
            continue
        target, embedded_cost = extra(element)
        nexts = list(element) + ([target] if target is not None else [])
        if not expanded:
            if key in busy:
                raise UnusableImage("svg too complex", f"a <use> reference cycle through id '{element.get('id')}'")
            busy.add(key)
            stack.append((element, True))
            for child in nexts:
                if id(child) in busy:
                    raise UnusableImage("svg too complex", f"a <use> reference cycle through id '{child.get('id')}'")
                if id(child) not in cost:
                    stack.append((child, False))
            continue
        busy.discard(key)
        total = 1 + embedded_cost + sum(cost[id(child)] for child in nexts)
        if total > MAX_SVG_ELEMENTS:
            raise UnusableImage("svg too complex", f"over {MAX_SVG_ELEMENTS:,} elements to draw "
                                                   "(<use> targets counted once per use)")
        cost[key] = total
    return cost[id(root)]


def _fetch(url: str, resource_type: str) -> bytes:
    """What cairosvg gets for a reference inside the document: data: URLs (inflated within the bound),
    never a file or a web address (an empty picture instead)."""
    data = _data_url(url)
    return inflate(data) if data else EMPTY_SVG


class _TooSlow(Exception):
    pass


def _render_with_timer(data: bytes) -> bytes:
    from cairosvg.surface import PNGSurface

    def render() -> bytes:
        # svg2png() does not pass url_fetcher on; the surface's convert() is what it calls.  No url: nothing
        # in the document resolves against the file's location.
        return PNGSurface.convert(bytestring=data, url=None, unsafe=False, url_fetcher=_fetch,
                                  output_width=SVG_RENDER_SIZE)

    if threading.current_thread() is not threading.main_thread():
        return render()  # signals reach the main thread only; the element bound still holds

    def expire(_signum, _frame):
        raise _TooSlow()

    previous = signal.signal(signal.SIGALRM, expire)
    if previous is None:  # a handler installed from C: the default is the closest Python can put back
        previous = signal.SIG_DFL
    started = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, SVG_RENDER_SECONDS)
    try:
        return render()
    except _TooSlow:
        raise UnusableImage("svg too slow", f"over {SVG_RENDER_SECONDS:.0f} s to render") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # someone else's timer (pytest-timeout, a server): re-armed with what it had left
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3))


def render_svg(path: Path, max_pixels: int) -> Image.Image:
    """The SVG file rendered SVG_RENDER_SIZE pixels wide, from its own bytes only; UnusableImage past a bound."""
    data = read_svg_file(path)
    drawn_elements(data, max_pixels)
    return Image.open(io.BytesIO(_render_with_timer(data)))


_NUMBER = re.compile(r"\s*([0-9.eE+-]+)")


def _check_declared_shape(root: Element, max_pixels: int) -> None:
    """Refuse a root whose declared aspect is past the image bound before cairo allocates the surface
    (rendered 256 wide, a 1 x 100,000 viewBox would be a 256 x 25,600,000 canvas)."""
    sizes = []
    box = (root.get("viewBox") or "").replace(",", " ").split()
    if len(box) == 4:
        sizes = box[2:]
    elif root.get("width") and root.get("height"):
        sizes = [root.get("width"), root.get("height")]
    try:
        width, height = (float(_NUMBER.match(s).group(1)) for s in sizes)
    except (AttributeError, ValueError, TypeError):
        return  # no usable numbers: cairosvg's own defaults apply, and the rendered size is checked after
    if width > 0 and height > 0:
        scale = SVG_RENDER_SIZE / width
        check_size(SVG_RENDER_SIZE, max(1, round(height * scale)), max_pixels)
