"""The OpenMoji group benchmark, read from the real npm package (openmoji@17.0.0)."""

import json

import pytest

from locktune.data.packages import npm_package_path
from locktune.eval.benchmarks import get_benchmark
from locktune.eval.benchmarks.openmoji import GROUP_NAMES


@pytest.fixture(scope="module")
def package():
    # `make` installs it (scripts/install-data.sh): missing is a failure naming the fix, not a skip.
    return npm_package_path("openmoji", "17.0.0", "the OpenMoji benchmark")


def test_openmoji_groups_classes_labels_and_no_skin_tone_variants(package):
    bench = get_benchmark("openmoji_groups")
    entries = json.loads((package / "data" / "openmoji.json").read_text(encoding="utf-8"))
    by_hexcode = {e["hexcode"]: e for e in entries}
    assert len(bench.class_names) == 9 and bench.class_names == list(GROUP_NAMES.values())
    assert all(0 <= label < 9 for label in bench.labels) and set(bench.labels) == set(range(9))
    assert len(bench.images) == len(bench.labels)
    hexcodes = [p.rsplit("/", 1)[1].removesuffix(".svg") for p in bench.images.paths]
    assert not any(str(by_hexcode[h]["skintone"]).strip() for h in hexcodes)
    assert {by_hexcode[h]["group"] for h in hexcodes} == set(GROUP_NAMES)
    expected = sum(1 for e in entries if e["group"] in GROUP_NAMES and not str(e["skintone"]).strip())
    assert len(hexcodes) == expected
    # The base "waving hand" stays; its five skin-tone variants do not.
    assert "1F44B" in hexcodes and "1F44B-1F3FB" not in hexcodes
    dog = hexcodes.index("1F436")  # dog face
    assert bench.class_names[bench.labels[dog]] == "animal or plant"
    assert all("{}" in t and "photo" not in t for t in bench.templates)


def test_openmoji_groups_balanced_subset_renders(package):
    bench = get_benchmark("openmoji_groups", 90)
    assert len(bench.labels) == 90 and all(bench.labels.count(c) == 10 for c in range(9))
    image = bench.images.load(bench.labels.index(2))
    assert min(image.size) > 0
