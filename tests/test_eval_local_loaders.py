"""The local-copy loaders (VTAB-natural folder sets and ImageNet's folder variants) on tiny fake trees laid
out as each dataset is distributed, read through the `KIND:PATH` registry."""

import io

import numpy as np
import pytest
from PIL import Image

from locktune.errors import LocktuneError
from locktune.eval.assets import imagenet_class_names
from locktune.eval.benchmarks import get_benchmark

_PNG = io.BytesIO()
Image.new("RGB", (4, 4), (200, 30, 30)).save(_PNG, format="PNG")
PNG = _PNG.getvalue()  # a real image's bytes; the file name's suffix is what the loaders look at


def put(path, data=PNG):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def by_class(bench):
    """{class name: sorted image file names} as the benchmark labels them."""
    out = {}
    for path, label in zip(bench.images.paths, bench.labels):
        out.setdefault(bench.class_names[label], []).append(path.rsplit("/", 1)[1])
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("top", ["101_ObjectCategories", "caltech101/101_ObjectCategories",
                                 "caltech-101/101_ObjectCategories"])
def test_caltech101(tmp_path, top):
    for cls in ("BACKGROUND_Google", "Faces_easy", "accordion", "water_lilly"):
        for i in (1, 2):
            put(tmp_path / top / cls / f"image_{i:04d}.jpg")
    bench = get_benchmark(f"caltech101:{tmp_path}")
    assert bench.class_names == ["Faces easy", "accordion", "water lilly"]  # the background class is skipped
    assert by_class(bench) == {c: ["image_0001.jpg", "image_0002.jpg"] for c in bench.class_names}
    assert bench.labels == [0, 0, 1, 1, 2, 2] and len(bench.templates) == 34
    assert get_benchmark(f"caltech101:{tmp_path}", 3).labels == [0, 1, 2]


@pytest.mark.parametrize("top", ["images", "dtd/images"])
def test_dtd(tmp_path, top):
    for cls in ("banded", "zigzagged", "bubbly"):
        for i in (2, 5):
            put(tmp_path / top / cls / f"{cls}_{i:04d}.jpg")
    put(tmp_path / "dtd" / "labels" / "test1.txt", b"banded/banded_0002.jpg\n")  # not a class
    bench = get_benchmark(f"dtd:{tmp_path}")
    assert bench.class_names == ["banded", "bubbly", "zigzagged"]
    assert bench.labels == [0, 0, 1, 1, 2, 2]
    assert by_class(bench)["bubbly"] == ["bubbly_0002.jpg", "bubbly_0005.jpg"]


@pytest.mark.parametrize("top", ["SUN397", "."])
def test_sun397(tmp_path, top):
    root = tmp_path / top
    # SUN397/<letter>/<class>[/<subclass>]/sun_*.jpg, and the release's text files at the top.
    for rel in ("a/abbey", "a/apartment_building/outdoor", "b/bedroom", "b/bakery/shop"):
        for i in (1, 2):
            put(root / rel / f"sun_{rel.replace('/', '')}{i}.jpg")
    put(root / "ClassName.txt", b"/a/abbey\n")
    bench = get_benchmark(f"sun397:{tmp_path}")
    assert bench.class_names == ["abbey", "apartment building outdoor", "bakery shop", "bedroom"]
    assert bench.labels == [0, 0, 1, 1, 2, 2, 3, 3]
    assert by_class(bench)["bakery shop"] == ["sun_bbakeryshop1.jpg", "sun_bbakeryshop2.jpg"]


@pytest.mark.parametrize("top", [".", "flowers-102"])
def test_flowers102(tmp_path, top):
    from scipy.io import savemat

    base = tmp_path / top
    base.mkdir(exist_ok=True)
    # Labels 1-based, one per image_NNNNN.jpg; setid.mat's tstid picks the test images (1-based ids).
    labels = [1, 2, 3, 1, 2, 3, 3]
    for i in range(1, len(labels) + 1):
        put(base / "jpg" / f"image_{i:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    with pytest.raises(LocktuneError, match="classes.txt"):  # the dataset ships no class names
        get_benchmark(f"flowers102:{tmp_path}")
    (base / "classes.txt").write_text("pink primrose\nhard-leaved pocket orchid\ncanterbury bells\n")

    bench = get_benchmark(f"flowers102:{tmp_path}")  # no setid.mat: every image
    assert bench.class_names == ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]
    assert [p.rsplit("/", 1)[1] for p in bench.images.paths] == [f"image_{i:05d}.jpg" for i in range(1, 8)]
    assert bench.labels == [0, 1, 2, 0, 1, 2, 2] and bench.templates == ["a photo of a {}, a type of flower."]

    savemat(base / "setid.mat", {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[7]]),
                                 "tstid": np.array([[6, 4, 5]], dtype=np.uint16)})
    bench = get_benchmark(f"flowers102:{tmp_path}")
    assert [p.rsplit("/", 1)[1] for p in bench.images.paths] == ["image_00006.jpg", "image_00004.jpg",
                                                                  "image_00005.jpg"]
    assert bench.labels == [2, 0, 1]

    # A label past the class list, and a listed image that is missing, are one-line errors.
    (base / "classes.txt").write_text("pink primrose\nhard-leaved pocket orchid\n")
    with pytest.raises(LocktuneError, match=r"label 3 .*\(2 names\)"):
        get_benchmark(f"flowers102:{tmp_path}")
    (base / "classes.txt").write_text("pink primrose\nhard-leaved pocket orchid\ncanterbury bells\n")
    (base / "jpg" / "image_00004.jpg").unlink()
    with pytest.raises(LocktuneError, match="image_00004.jpg"):
        get_benchmark(f"flowers102:{tmp_path}")


# ImageNet: three WordNet ids whose sorted order is their class-index order (0 tench, 1 goldfish, 2 shark).
WNIDS = ["n01440764", "n01443537", "n01484850"]


def _wnid_file(tmp_path, monkeypatch, n=1000):
    """A LOC_synset_mapping.txt-style list: the three real ids first, then made-up ids to make 1,000."""
    ids = WNIDS + [f"n9{i:07d}" for i in range(n - len(WNIDS))]
    path = tmp_path / "LOC_synset_mapping.txt"
    path.write_text("".join(f"{w} name {i}\n" for i, w in enumerate(ids)))
    monkeypatch.setenv("LOCKTUNE_IMAGENET_WNIDS", str(path))
    return ids


@pytest.mark.parametrize("kind", ["imagenet", "imagenet_sketch"])
def test_imagenet_val_and_sketch_folders(tmp_path, kind, monkeypatch):
    root = tmp_path / "val"
    ids = _wnid_file(tmp_path, monkeypatch)
    for w in sorted(ids):
        put(root / w / f"ILSVRC2012_val_{w}.JPEG")
    for i in (1, 2):
        put(root / WNIDS[1] / f"extra_{i}.JPEG")
    put(root / "LOC_val_solution.csv", b"ImageId,PredictionString\n")
    bench = get_benchmark(f"{kind}:{root}")
    names = imagenet_class_names()
    assert bench.class_names == names and len(bench.labels) == 1002
    assert bench.labels[:4] == [0, 1, 1, 1] and bench.imagenet_indices[:3] == [[0], [1], [2]]
    assert by_class(bench)[names[1]] == sorted(["ILSVRC2012_val_n01443537.JPEG", "extra_1.JPEG", "extra_2.JPEG"])
    assert len(bench.templates) == 80
    (root / "n01440764" / "ILSVRC2012_val_n01440764.JPEG").unlink()
    (root / "n01440764").rmdir()
    with pytest.raises(LocktuneError, match="expected 1000 class folders .* found 999"):
        get_benchmark(f"{kind}:{root}")


def test_imagenet_v2_numbered_folders(tmp_path):
    root = tmp_path / "imagenetv2-matched-frequency-format-val"
    for i in range(1000):
        put(root / str(i) / f"{i}a.jpeg")
    put(root / "2" / "extra.jpeg")
    bench = get_benchmark(f"imagenet_v2:{root}", 0)
    names = imagenet_class_names()
    assert bench.class_names == names
    assert bench.labels[:4] == [0, 1, 2, 2] and bench.labels[-1] == 999  # numeric, not string, order
    assert by_class(bench)[names[10]] == ["10a.jpeg"] and by_class(bench)[names[2]] == ["2a.jpeg", "extra.jpeg"]


@pytest.mark.parametrize("kind", ["imagenet_r", "imagenet_a"])
def test_imagenet_r_and_a_subsets(tmp_path, kind, monkeypatch):
    _wnid_file(tmp_path, monkeypatch)
    root = tmp_path / kind.replace("_", "-")
    for w in (WNIDS[2], WNIDS[1]):
        for i in (1, 2):
            put(root / w / f"{kind}_{i}.jpg")
    put(root / "README.txt", b"200 classes\n")
    bench = get_benchmark(f"{kind}:{root}")
    names = imagenet_class_names()
    assert bench.class_names == [names[1], names[2]] and bench.imagenet_indices == [[1], [2]]
    assert bench.labels == [0, 0, 1, 1]
    put(root / "n00000001" / "x.jpg")
    with pytest.raises(LocktuneError, match="n00000001"):
        get_benchmark(f"{kind}:{root}")
    monkeypatch.setenv("LOCKTUNE_IMAGENET_WNIDS", str(tmp_path / "nope.txt"))
    with pytest.raises(LocktuneError, match="LOCKTUNE_IMAGENET_WNIDS"):
        get_benchmark(f"{kind}:{root}")
