"""Optional packages, grouped as the pip extras that install them: a missing one is one line naming the
extra (`pip install 'locktune[plots]'`), not an ImportError traceback."""

from __future__ import annotations

import importlib.util

from locktune.errors import LocktuneError

# extra -> the modules it provides (what `pip install 'locktune[EXTRA]'` installs; see pyproject.toml)
EXTRAS = {
    "plots": ("matplotlib",),
    "serve": ("fastapi", "uvicorn", "multipart"),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "hf-datasets": ("datasets",),
    "local-benchmarks": ("scipy",),
    "timm": ("timm",),
    "open-clip": ("open_clip",),
    "faiss": ("faiss",),
    "tensorboard": ("tensorboard",),
    "wandb": ("wandb",),
}


def missing_extra(extra: str) -> str | None:
    """The first module of `extra` that is not installed, or None."""
    return next((m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None), None)


def require_extra(extra: str, what: str, hint: str = "") -> None:
    """Raise one line naming the extra when any of its modules is missing (checked without importing)."""
    module = missing_extra(extra)
    if module is not None:
        raise LocktuneError(f"{what} needs the optional package '{module}': pip install 'locktune[{extra}]'"
                            + (f" ({hint})" if hint else ""))
