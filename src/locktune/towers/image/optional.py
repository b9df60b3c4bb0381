"""What the towers from optional packages (`timm:`, `open_clip:`) share: reading their `KIND:NAME@SOURCE`
name, importing the package (or one line naming the extra that installs it), one-line errors, and checking
that a tower runs at the size it is asked for."""

from __future__ import annotations

import torch

from locktune.errors import LocktuneError
from locktune.towers.image.base import ImageTower
from locktune.towers.image.hf_processor import scaled
from locktune.towers.image.preprocess import Preprocess

TORCHVISION_NOTE = ("(timm and open_clip need torchvision, and PyPI's torchvision does not import beside a CPU-only "
                    "torch build; install matching torch and torchvision builds)")
HUB_SCHEMES = ("hf-hub:", "hf_hub:", "local-dir:")


def split_spec(kind: str, spec: str, form: str) -> tuple[str, str, str]:
    """'NAME@SOURCE' -> (the tower's name for messages, NAME, SOURCE).  The packages' own hub schemes
    (`hf-hub:`, `local-dir:`) are refused: they would download behind locktune's back (`towers/hub.py`)."""
    what = f"image tower '{kind}:{spec}'"
    name, _, source = spec.partition("@")
    if name.startswith(HUB_SCHEMES) or not name:
        raise LocktuneError(f"{what}: write {form}")
    return what, name, source


def import_extra(module: str, extra: str, what: str):
    """Import an optional package, or one line naming the extra that installs it."""
    try:
        return __import__(module)
    except ImportError as error:
        raise LocktuneError(f"{what} needs the package '{module}', which is not installed: pip install "
                            f"'locktune[{extra}]' ({error})") from None
    except (RuntimeError, OSError, AttributeError) as error:  # torchvision's compiled operators failing to load
        raise LocktuneError(f"{what}: '{module}' is installed but does not import "
                            f"({str(error).splitlines()[0][:160]}) {TORCHVISION_NOTE}") from None


def first_line(error: BaseException, limit: int = 240) -> str:
    """An exception as one line: its type and the start of its message, newlines folded."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:limit] + ('...' if len(text) > limit else '')}"


def probe_dim(tower: ImageTower, size: int) -> int:
    """The tower's output width, from one forward pass on a blank `size` px image (eval mode, no gradients)."""
    was = tower.training
    tower.eval()
    try:
        with torch.no_grad():
            return int(tower(torch.zeros(1, 3, size, size)).shape[-1])
    finally:
        tower.train(was)


def checked_preprocess(tower: ImageTower, image_size: int) -> Preprocess:
    """The tower's preprocessing at `image_size` (0: native), once checked that the tower runs at that size:
    a model with a fixed input size is one line at build time, not an error inside the first batch."""
    native = tower.native.image_size
    checked = tower.__dict__.setdefault("_sizes_checked", {native})
    if image_size and image_size not in checked:
        try:
            probe_dim(tower, image_size)
        except Exception as error:
            raise LocktuneError(f"image tower '{tower.name}' does not run at {image_size} px (its pretraining size is "
                                f"{native}) ({first_line(error, 160)}); set model.image_size=0 or a size it "
                                "takes") from None
        checked.add(image_size)
    return scaled(tower.native, image_size)
