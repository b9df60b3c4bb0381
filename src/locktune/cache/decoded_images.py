"""An image set as a torch Dataset of decoded images, for the loaders that embed images (`embedding_cache`)
and decode them once (`pixel_cache`): item i is (i, transform(image i), "") or, when the image cannot be
decoded, (i, fallback, "ErrorType: message").  A broken image is counted by the caller, never fatal here."""

from __future__ import annotations

from typing import Any, Callable

from torch.utils.data import Dataset

from locktune.data.images import ImageSet


class DecodedImages(Dataset):
    def __init__(self, images: ImageSet, transform: Callable[[Any], Any], fallback: Callable[[], Any]):
        self.images, self.transform, self.fallback = images, transform, fallback

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            return index, self.transform(self.images.load(index)), ""
        except Exception as error:  # noqa: BLE001 - reported with the row, counted by the caller
            return index, self.fallback(), f"{type(error).__name__}: {error}"
