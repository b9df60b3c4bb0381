import os

import pytest

os.environ.setdefault("LOCKTUNE_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Each test session gets its own embedding cache, so tests never see a stale or shared entry."""
    os.environ["LOCKTUNE_CACHE"] = str(tmp_path_factory.mktemp("locktune-cache"))
    yield


@pytest.fixture(scope="session")
def emoji_pairs():
    from locktune.data.pairs import load_pairs

    return load_pairs(["emoji"], max_pairs_per_source=96)
