"""Built-in pair sources for training, from data that ships in Debian and npm packages, and the sources
that read users' own data by path (WebDataset shards, manifests, image folders, Hugging Face datasets on disk)."""

from locktune.data.sources import emoji, openclipart, tuxpaint  # noqa: F401  (registers)
from locktune.data.sources import folder, hf_datasets, manifest, webdataset  # noqa: F401  (registers path sources)
