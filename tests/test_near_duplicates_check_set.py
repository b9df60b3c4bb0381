"""The crop-, scale- and mirror-aware near-duplicate check (`locktune.data.reframed_duplicates`) on the
committed check set of labelled pairs (`assets/near_duplicate_check_set.json`: Tux Paint stamps beside
their closest training images, judged by eye): precision and recall measured, and compared with the
whole-canvas hash of `near_duplicates`, which misses most re-framed copies."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from locktune.data import near_duplicates as nd
from locktune.data import reframed_duplicates as rd
from locktune.data.images import FileImages
from locktune.data.packages import npm_package_path

CHECK_SET = Path(rd.__file__).parent.parent / "assets" / "near_duplicate_check_set.json"
ROOTS = {"openclipart": Path("/usr/share/openclipart/png")}


def _path(ref: str) -> Path:
    source, _, rest = ref.partition(":")
    if source == "emoji":
        return Path(npm_package_path("emoji-datasource-google", "16.0.0", "the check set")) / rest
    return ROOTS[source] / rest


def _load(path: Path) -> Image.Image:
    return FileImages([path]).load(0)


@pytest.fixture(scope="module")
def labelled():
    pairs = json.loads(CHECK_SET.read_text())["pairs"]
    out = []
    for pair in pairs:
        stamp, training = _load(Path("/usr/share/tuxpaint/stamps") / pair["stamp"]), _load(_path(pair["training"]))
        out.append((pair, stamp, training))
    return out


def _reframed_match(a: Image.Image, b: Image.Image) -> bool:
    (ha, ta), (hb, tb) = rd.signature(a), rd.signature(b)
    return rd.matches((ha[None], ta[None]), (hb[None], tb[None])) == {0: 0}


def _whole_canvas_match(a: Image.Image, b: Image.Image) -> bool:
    sig = lambda image: (np.array([nd.phash(image)], dtype=np.uint64), nd.thumbnail(image)[None])  # noqa: E731
    try:
        return nd.matches(sig(a), sig(b)) == [0]
    except nd.BlankImage:
        return False


def _precision_recall(labelled, detector):
    truth = np.array([pair["same_picture"] for pair, _, _ in labelled])
    found = np.array([detector(a, b) for _, a, b in labelled])
    hits = int((truth & found).sum())
    return hits / max(int(found.sum()), 1), hits / int(truth.sum()), found


def test_check_set_is_big_enough_and_labelled_both_ways(labelled):
    truth = [pair["same_picture"] for pair, _, _ in labelled]
    assert sum(truth) >= 80 and len(truth) - sum(truth) >= 50
    assert len({(p["stamp"], p["training"]) for p, _, _ in labelled}) == len(labelled)


def test_reframed_detector_precision_and_recall_on_the_check_set(labelled):
    precision, recall, found = _precision_recall(labelled, _reframed_match)
    missed = [p["stamp"] for (p, _, _), f in zip(labelled, found) if p["same_picture"] and not f]
    wrong = [p["stamp"] for (p, _, _), f in zip(labelled, found) if not p["same_picture"] and f]
    assert precision == 1.0, wrong
    assert recall >= 0.95, missed  # 83 of 86: the igloo, the castle tower and a stamp whose crop differs
    old_precision, old_recall, _ = _precision_recall(labelled, _whole_canvas_match)
    assert old_recall < 0.5 and old_precision == 1.0  # the whole-canvas hash finds under half of them


def test_reframing_scaling_and_mirroring_a_training_image_is_found(labelled):
    """Synthetic positives from the check set's own training images: the picture put on a wider canvas,
    scaled down, and mirrored; each a match, and no match against a different labelled picture."""
    for pair, _, training in labelled[:12]:
        rgba = training.convert("RGBA")
        w, h = rgba.size
        canvas = Image.new("RGBA", (w * 2 + 37, h + 90), (0, 0, 0, 0))
        canvas.paste(rgba, (w // 3, 60), rgba)
        small = ImageOps.mirror(canvas.resize((canvas.width // 2, canvas.height // 2), Image.Resampling.LANCZOS))
        assert _reframed_match(small, training), pair["training"]
    negatives = [(a, b) for pair, a, b in labelled if not pair["same_picture"]]
    assert not any(_reframed_match(a, b) for a, b in negatives)


def test_blank_images_match_nothing():
    blank = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
    hashes, thumb = rd.signature(blank)
    assert (hashes == nd.UNREADABLE).all()
    assert rd.matches((hashes[None], thumb[None]), (hashes[None], thumb[None])) == {}
