"""Users' own labelled images and local dataset copies: what loads, and one-line errors naming the item."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from locktune.cli import main
from locktune.errors import LocktuneError
from locktune.eval.benchmarks import get_benchmark


def png(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), colour).save(path)
    return path


def test_image_folder_with_and_without_class_file(tmp_path):
    for cls, n in (("golden_retriever", 2), ("tabby-cat", 3)):
        for i in range(n):
            png(tmp_path / cls / "sub" / f"{i}.png")
    bench = get_benchmark(f"folder:{tmp_path}")
    assert bench.class_names == ["golden retriever", "tabby cat"] and bench.labels == [0, 0, 1, 1, 1]
    (tmp_path / "classes.txt").write_text("tabby-cat\tcat\ngolden_retriever\tdog\n")
    bench = get_benchmark(f"folder:{tmp_path}", max_images=4)
    assert bench.class_names == ["cat", "dog"] and sorted(bench.labels) == [0, 0, 1, 1]


def test_csv_and_jsonl_tables(tmp_path):
    a, b = png(tmp_path / "img" / "a.png"), png(tmp_path / "img" / "b.png")
    (tmp_path / "set.csv").write_text("path,label\nimg/a.png,zebra\nimg/b.png,ant\n")
    bench = get_benchmark(f"table:{tmp_path / 'set.csv'}")
    assert bench.class_names == ["ant", "zebra"] and bench.labels == [1, 0]
    (tmp_path / "set.jsonl").write_text(json.dumps({"path": str(a), "label": "1"}) + "\n"
                                        + json.dumps({"path": "img/b.png", "label": "cat"}) + "\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    bench = get_benchmark(f"table:{tmp_path / 'set.jsonl'}")
    assert bench.class_names == ["cat", "dog"] and bench.labels == [1, 0]


@pytest.mark.parametrize("make, expected", [
    (lambda p: (p / "root").mkdir(), "the class list is empty"),
    (lambda p: (png(p / "root" / "cat" / "1.png"), (p / "root" / "dog").mkdir()), "class 'dog' has no images"),
    (lambda p: (png(p / "root" / "cat" / "1.png"), png(p / "root" / "cow" / "1.png"),
                (p / "root" / "classes.txt").write_text("cat\n")), "folder 'cow' is not in the class list"),
])
def test_folder_errors_name_the_item(tmp_path, make, expected):
    make(tmp_path)
    with pytest.raises(LocktuneError, match=expected):
        get_benchmark(f"folder:{tmp_path / 'root'}")


@pytest.mark.parametrize("rows, classes, expected", [
    ("path,label\nimg/a.png,cat\nimg/gone.png,cat\n", None, r"image 'img/gone.png' \(line 3 of t.csv\) does not exist"),
    ("path,label\nimg/a.png,cat\nimg/a.png,zebra\n", "cat\ndog\n", r"label 'zebra' \(line 3 of t.csv\) is not in the class list"),
    ("path,label\nimg/a.png,cat\n", "cat\ndog\n", "class 'dog' has no images"),
    ("path,label\nimg/a.png,cat\n", "\n", "the class list is empty"),
    ("file,label\nimg/a.png,cat\n", None, "must name 'path' and 'label' columns"),
])
def test_table_errors_name_the_item(tmp_path, rows, classes, expected):
    png(tmp_path / "img" / "a.png")
    (tmp_path / "t.csv").write_text(rows)
    if classes is not None:
        (tmp_path / "classes.txt").write_text(classes)
    with pytest.raises(LocktuneError, match=expected):
        get_benchmark(f"table:{tmp_path / 't.csv'}")


def test_cli_reports_bad_input_in_one_line_before_loading_a_model(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "no-model"), "eval.benchmarks=[caltech999:/x]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown local benchmark loader 'caltech999'" in err and len(err.splitlines()) == 1
    assert main(["eval", "--model", str(tmp_path), "eval.suite=nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown suite 'nope'; valid: " in err and "offline" in err and len(err.splitlines()) == 1


def test_local_cifar100_svhn_pets_and_imagenet_v2_layouts(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar" / "cifar-100-python"
    folder.mkdir(parents=True)
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "fine_labels": [0, 1, 1, 0]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["apple", "aquarium_fish"]}, f)
    bench = get_benchmark(f"cifar100:{tmp_path / 'cifar'}")
    assert bench.class_names == ["apple", "aquarium fish"] and bench.labels == [0, 1, 1, 0]
    assert bench.images.load(0).size == (32, 32)

    savemat(tmp_path / "test_32x32.mat", {"X": rng.integers(0, 255, (32, 32, 3, 3), dtype=np.uint8),
                                           "y": np.array([[10], [3], [10]])})
    assert get_benchmark(f"svhn:{tmp_path}").labels == [0, 3, 0]

    pets = tmp_path / "pets"
    for stem in ("Abyssinian_1", "Abyssinian_2", "great_pyrenees_1"):
        png(pets / "images" / f"{stem}.jpg")
    bench = get_benchmark(f"pets:{pets}")
    assert bench.class_names == ["Abyssinian", "great pyrenees"] and bench.labels == [0, 0, 1]

    with pytest.raises(LocktuneError, match="expected 1000 class folders"):
        get_benchmark(f"imagenet_v2:{pets}")


def test_entries_named_like_images_that_are_not_files_are_counted(tmp_path, capsys):
    """A directory called x.jpg and a dangling link are reported by reason, never dropped silently."""
    from PIL import Image

    from locktune.eval.benchmarks.user_data import image_files

    (tmp_path / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "a.png")
    (tmp_path / "cat" / "folder.jpg").mkdir()
    (tmp_path / "cat" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert image_files(tmp_path) == [tmp_path / "cat" / "a.png"]
    err = capsys.readouterr().err
    assert "2 entries named like images were skipped" in err
    assert "1 dangling link (first: cat/gone.png)" in err and "1 not a file (first: cat/folder.jpg)" in err
