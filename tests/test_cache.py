"""The embedding cache: reused on a second run, recomputed when the preprocessing or images change."""

import numpy as np
import torch

from locktune.cache.embedding_cache import cached_features
from locktune.data.images import ArrayImages
from locktune.towers.image import build_image_tower
from locktune.towers.image.preprocess import preprocess_for


class CountingTower(torch.nn.Module):
    def __init__(self, tower):
        super().__init__()
        self.inner, self.images_seen = tower, 0
        self.name = tower.name

    def cache_identity(self):
        return self.inner.cache_identity()

    def forward(self, x):
        self.images_seen += x.shape[0]
        return self.inner(x)


def test_cache_is_reused_and_invalidated_by_preprocessing():
    rng = np.random.default_rng(0)
    images = ArrayImages(rng.integers(0, 255, size=(6, 20, 20, 3), dtype=np.uint8), "random-test-images")
    tower = CountingTower(build_image_tower("mobilenet_v2", pretrained=True))
    prep64 = preprocess_for(tower.inner, 64)

    first = cached_features(tower, prep64, images, batch_size=4, workers=0)
    assert first.computed and tower.images_seen == 6
    second = cached_features(tower, prep64, images, batch_size=4, workers=0)
    assert not second.computed and tower.images_seen == 6, "no forward passes on reuse"
    assert torch.equal(first.features, second.features)

    # Same features as running the tower directly (the cache stores what the tower outputs).
    tower.inner.eval()  # the cache runs the tower in eval mode (batch norm uses its statistics)
    with torch.no_grad():
        direct = tower.inner(torch.stack([prep64(images.load(i)) for i in range(6)]))
    assert torch.allclose(first.features, direct, atol=1e-5)

    third = cached_features(tower, preprocess_for(tower.inner, 72), images, batch_size=4, workers=0)
    assert third.computed and tower.images_seen == 12, "a new image size is a new cache entry"
    assert third.path != first.path

    fewer = ArrayImages(images.array, "random-test-images", indices=[0, 1, 2])
    fourth = cached_features(tower, prep64, fewer, batch_size=4, workers=0)
    assert fourth.computed, "a different image set is a different entry"


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    from locktune.data.images import FileImages

    good = tmp_path / "good.png"
    from PIL import Image

    Image.new("RGB", (30, 30), (200, 10, 10)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    tower = build_image_tower("mobilenet_v2", pretrained=True)
    result = cached_features(tower, preprocess_for(tower, 64), FileImages([good, broken]), workers=0)
    assert result.valid.tolist() == [True, False]
    assert list(result.failed) == [str(broken)]
