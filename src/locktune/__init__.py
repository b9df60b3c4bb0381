"""locktune: LiT (Locked-image Tuning) for any image tower and any text tower.

The public API is `locktune.load`, which returns a `locktune.LitModel` (`locktune.api`)."""

__version__ = "0.1.0"
__all__ = ["LitModel", "__version__", "load"]


def load(path, device="auto"):  # -> locktune.api.LitModel
    """Load a trained model (a run folder or a saved-model folder) for inference, on `device` (auto: CUDA when
    visible, else the CPU; cpu; cuda:1; ...); returns a `locktune.LitModel` (see `locktune.api`).

    Imported lazily so that `import locktune` stays fast.
    """
    from locktune.api import load as _load

    return _load(path, device=device)


def __getattr__(name: str):
    if name == "LitModel":  # imported on first use, as `load` is: `import locktune` stays fast
        from locktune.api import LitModel

        return LitModel
    raise AttributeError(f"module 'locktune' has no attribute {name!r}")
