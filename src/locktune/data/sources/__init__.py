"""Built-in pair sources for training, from data that ships in Debian and npm packages."""

from locktune.data.sources import emoji, openclipart  # noqa: F401  (registers)
