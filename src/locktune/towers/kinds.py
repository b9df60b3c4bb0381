"""Tower names: a bundled name (`minilm`) or `KIND:SPEC` for a model the user brings (`hf:bert-base-uncased`).

One place parses the prefix and says what is wrong with a name, for image and text towers alike.
"""

from __future__ import annotations

from locktune.errors import LocktuneError
from locktune.registry import Registry


def split_kind(name: str) -> tuple[str | None, str]:
    """'hf:facebook/dinov2-small' -> ('hf', 'facebook/dinov2-small'); a bundled name -> (None, name)."""
    if ":" in name:
        kind, spec = name.split(":", 1)
        return kind, spec
    return None, name


def check_tower_name(name: str, side: str, bundled: Registry, kinds: Registry, example: str) -> None:
    """Fails early (at config load) on an unknown bundled name or kind prefix, listing the valid ones."""
    if not isinstance(name, str) or not name:
        raise LocktuneError(f"model.{side}_tower must be a tower name, got {name!r}")
    kind, spec = split_kind(name)
    if kind is None:
        if name not in bundled:
            raise LocktuneError(f"unknown {side} tower '{name}'; valid: {', '.join(bundled.names())}, or KIND:NAME "
                                f"with KIND one of {', '.join(k + ':' for k in kinds.names())} (e.g. {example})")
        return
    if kind not in kinds:
        raise LocktuneError(f"{side} tower '{name}': unknown kind '{kind}:'; valid kinds: "
                            f"{', '.join(k + ':' for k in kinds.names())} (or a bundled name: "
                            f"{', '.join(bundled.names())})")
    if not spec.strip():
        raise LocktuneError(f"{side} tower '{name}' names no model after '{kind}:' (e.g. {example})")
