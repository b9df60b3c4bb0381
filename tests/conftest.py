import os

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red run must be reproducible); `HYPOTHESIS_PROFILE=explore`
# draws fresh ones when hunting for new failures, and any it finds go in as `@example`s.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

os.environ.setdefault("LOCKTUNE_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The second device kind (`locktune.runtime.fake_device`), registered before any test runs a backward pass
# (autograd sizes its per-device queues once, at the first one): tests/test_device.py runs on it.
from locktune.runtime import fake_device  # noqa: E402

fake_device.register()


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Each test session gets its own embedding cache, so tests never see a stale or shared entry."""
    os.environ["LOCKTUNE_CACHE"] = str(tmp_path_factory.mktemp("locktune-cache"))
    yield


@pytest.fixture(scope="session")
def emoji_pairs():
    from locktune.data.pairs import load_pairs

    return load_pairs(["emoji"], max_pairs_per_source=96)
