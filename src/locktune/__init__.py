"""locktune: LiT (Locked-image Tuning) for any image tower and any text tower."""

__version__ = "0.1.0"


def load(path, device="auto"):  # -> locktune.api.LitModel
    """Load a trained model (run folder or saved-model folder) for inference, on `device` (auto: CUDA when
    visible, else the CPU; cpu; cuda:1; ...): see `locktune.api`.

    Imported lazily so that `import locktune` stays fast.
    """
    from locktune.api import load as _load

    return _load(path, device=device)
