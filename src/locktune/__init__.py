"""locktune: LiT (Locked-image Tuning) for any image tower and any text tower."""

__version__ = "0.1.0"
