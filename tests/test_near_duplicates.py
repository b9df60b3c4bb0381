"""Near-duplicate detection (`locktune.data.near_duplicates`) and the `_clean` benchmarks built on it.

The hash is checked against scipy's DCT and a bit-by-bit rebuild, the distances against Python's own
popcount, and the detector on synthetic drawings (rescaled, mirrored, recoloured copies vs other
drawings) and on real pairs checked by eye (README, "Held-out hygiene")."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from scipy.fft import dctn

from locktune.data import near_duplicates as nd
from locktune.data.images import FileImages
from locktune.eval.benchmarks import ClassificationSet, RetrievalSet, get_benchmark
from locktune.eval.benchmarks import clean


def drawing(kind: str, canvas: int = 200, scale: float = 1.0, offset=(0, 0), colour=(200, 30, 30)) -> Image.Image:
    """A transparent RGBA canvas with one simple drawing on it."""
    image = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    ox, oy = offset

    def s(x, y):
        return ox + x * scale, oy + y * scale

    if kind == "house":
        draw.polygon([s(20, 80), s(70, 20), s(120, 80)], fill=colour + (255,))
        draw.rectangle([s(30, 80), s(110, 150)], fill=(40, 40, 160, 255))
        draw.rectangle([s(60, 110), s(80, 150)], fill=(250, 220, 0, 255))
    elif kind == "flag":
        draw.rectangle([s(20, 20), s(30, 160)], fill=(90, 60, 20, 255))
        draw.rectangle([s(30, 20), s(140, 80)], fill=colour + (255,))
        draw.ellipse([s(70, 35), s(100, 65)], fill=(255, 255, 255, 255))
    elif kind == "snowman":
        draw.ellipse([s(40, 90), s(120, 170)], outline=(0, 0, 0, 255), width=4)
        draw.ellipse([s(55, 40), s(105, 90)], outline=(0, 0, 0, 255), width=4)
        draw.line([s(10, 60), s(55, 110)], fill=(90, 60, 20, 255), width=5)
    return image


def test_dct_is_scipys_orthonormal_dct():
    x = np.random.default_rng(0).uniform(0, 255, size=(nd.SIDE, nd.SIDE))
    assert np.allclose(nd._DCT @ x @ nd._DCT.T, dctn(x, type=2, norm="ortho"), atol=1e-9)


def test_hash_bits_rebuilt_from_scipy():
    image = drawing("house")
    # Independent path: composite on white by hand, ITU-R 601 luma, Pillow's resize, scipy's DCT.
    rgba = np.asarray(image, dtype=np.float64)
    alpha = rgba[..., 3:4] / 255
    rgb = rgba[..., :3] * alpha + 255 * (1 - alpha)
    luma = np.round(rgb @ np.array([0.299, 0.587, 0.114]))
    grey = Image.fromarray(luma.astype(np.uint8)).resize((32, 32), Image.Resampling.LANCZOS)
    low = dctn(np.asarray(grey, dtype=np.float64), type=2, norm="ortho")[:8, :8].ravel()
    bits = low > low[1:].mean()
    expected = sum(int(b) << (63 - i) for i, b in enumerate(bits))
    got, _ = nd.phash(image)
    assert bin(int(got) ^ expected).count("1") <= 2  # rounding may move a grey level, and a bit next to the mean


def test_copies_match_and_other_drawings_do_not():
    original = nd.phash(drawing("house"))
    copies = {
        "resized": drawing("house").resize((520, 520), Image.Resampling.BICUBIC),
        "drawn at another scale": drawing("house", scale=2.5, canvas=500),
        "mirrored": ImageOps.mirror(drawing("house")),
        "recoloured roof": drawing("house", colour=(180, 50, 40)),
        "flattened on white": Image.alpha_composite(Image.new("RGBA", (200, 200), "white"), drawing("house")),
    }
    originals = np.array([original], dtype=np.uint64)
    for what, image in copies.items():
        best, where = nd.distances(np.array([nd.phash(image)], dtype=np.uint64), originals)
        assert best[0] <= nd.THRESHOLD, what
    for other in ("flag", "snowman"):
        best, _ = nd.distances(np.array([nd.phash(drawing(other))], dtype=np.uint64), originals)
        assert best[0] > nd.THRESHOLD + 4, other


def test_mirror_hash_is_the_hash_of_the_mirror_image():
    image = drawing("flag")
    plain, mirrored = nd.phash(image)
    assert bin(int(nd.phash(ImageOps.mirror(image))[0]) ^ int(mirrored)).count("1") <= 1
    assert plain != mirrored


def test_distances_match_python_popcount():
    rng = np.random.default_rng(3)
    query = rng.integers(1, 2 ** 63, size=(7, 2), dtype=np.uint64)
    reference = rng.integers(1, 2 ** 63, size=(600, 2), dtype=np.uint64)
    reference[5, 0] = nd.UNREADABLE
    best, where = nd.distances(query, reference)
    for q in range(7):
        d = [64 if int(r[0]) == 0 else min(bin(int(query[q, 0]) ^ int(r[0])).count("1"),
                                           bin(int(query[q, 1]) ^ int(r[0])).count("1")) for r in reference]
        assert best[q] == min(d) and d[where[q]] == min(d)


def test_blank_and_unreadable_images_match_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache"))
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(tmp_path / "blank.png")
    Image.new("RGB", (50, 50), "white").save(tmp_path / "white.png")
    tiny = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(tiny).ellipse([200, 200, 206, 206], fill=(0, 0, 0, 255))  # under 1% of the picture drawn
    tiny.save(tmp_path / "tiny.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    drawing("house").save(tmp_path / "house.png")
    images = FileImages([tmp_path / n for n in ("blank.png", "white.png", "tiny.png", "broken.png", "house.png")])
    hashes, thumbs = nd.signatures(images)
    assert (hashes[:4] == nd.UNREADABLE).all() and hashes[4, 0] != nd.UNREADABLE
    assert nd.matches((hashes, thumbs), (hashes, thumbs)) == [4]
    # Cached on disk by the set's fingerprint: a second call reads the file.
    files = list((tmp_path / "cache" / "near_duplicates").glob(f"v{nd.VERSION}-*.npz"))
    assert len(files) == 1 and np.array_equal(np.load(files[0])["hashes"], hashes)
    assert np.array_equal(nd.signatures(images)[0], hashes)


def _masked_rms(a, b):
    """Loop by loop: RMS over the channels of the pixels drawn (darker than white - INK) in either thumbnail."""
    total, count = 0.0, 0
    for y in range(a.shape[0]):
        for x in range(a.shape[1]):
            if any(int(v) < 255 - nd.INK for v in (*a[y, x], *b[y, x])):
                total += sum((float(p) - float(q)) ** 2 for p, q in zip(a[y, x], b[y, x]))
                count += 3
    return (total / count) ** 0.5


def test_thumbnail_check_picks_the_closest_candidate_and_rejects_recoloured_shapes():
    """Same shape in another colour: the grey hash matches, the colour thumbnail does not (RMS over the drawn
    part recomputed by loops)."""
    images = [drawing("flag", colour=c) for c in ((200, 30, 30), (30, 30, 200), (205, 35, 25))]
    sigs = (np.array([nd.phash(i) for i in images], dtype=np.uint64), np.stack([nd.thumbnail(i) for i in images]))
    query = (sigs[0][:1], sigs[1][:1])
    reference = (sigs[0][1:], sigs[1][1:])
    best, where, colour = nd.nearest(query, reference, threshold=64)
    by_hand = min(_masked_rms(sigs[1][0], sigs[1][2]), _masked_rms(sigs[1][0], sigs[1][2][:, ::-1]))
    assert where[0] == 1 and colour[0] == pytest.approx(by_hand) and colour[0] < 5
    assert nd.matches(query, (sigs[0][1:2], sigs[1][1:2]), threshold=64) == []  # red vs blue flag


def _tiny_classification(tmp_path) -> ClassificationSet:
    paths = []
    for i, (kind, colour) in enumerate([("house", (200, 30, 30)), ("flag", (20, 160, 20)), ("snowman", (0, 0, 0)),
                                        ("flag", (30, 30, 200)), ("house", (10, 10, 10))]):
        drawing(kind, colour=colour, scale=1 + 0.1 * i).save(tmp_path / f"b{i}.png")
        paths.append(tmp_path / f"b{i}.png")
    return ClassificationSet("tiny", FileImages(paths), [0, 1, 2, 1, 0], ["house", "flag", "snowman"], ["a {}."])


def test_without_drops_and_rebalances(tmp_path):
    bench = _tiny_classification(tmp_path)
    out = clean.without(bench, [1, 4], 0)
    assert out.name == "tiny_clean" and out.excluded == 2
    assert out.images.keys == [bench.images.keys[i] for i in (0, 2, 3)] and out.labels == [0, 2, 1]
    # Dropped first, then balanced: the rest is [0, 1, 3, 4] with labels [0, 1, 1, 0]; 3 balanced -> 0, 1, 4.
    out = clean.without(bench, [2], 3)
    assert out.images.keys == [bench.images.keys[i] for i in (0, 1, 4)] and out.labels == [0, 1, 0]
    retrieval = RetrievalSet("r", bench.images, [[f"caption {i}"] for i in range(5)])
    out = clean.without(retrieval, [0], 0)
    assert out.captions == [[f"caption {i}"] for i in range(1, 5)] and out.excluded == 1


CHECKED_DUPLICATES = [  # (Tux Paint stamp, OpenClipart PNG): checked by eye, the same picture
    ("insects/cartoon/spider.svg", "animals/bugs/spider.png"),
    ("clothes/sunglasses_01.svg", "clothing/sunglasses_01.png"),
    ("household/padlock_open.svg", "tools/lock_-_open_afief_halumi_01.png"),
    ("seasonal/leafrake.svg", "tools/leafrake_benji_park_01.png"),  # 7 bits, thumbnail 18.4 apart
]


CHECKED_LOOKALIKES = [  # close by hash, checked by eye: different pictures
    ("Pencil.svg", "action/pencil.png"),
    ("frog-1.png", "fruit/green_pear_01.png"),
    ("planets/0_sun.png", "stars/star_53pt22step.png"),  # 3 bits, but thumbnails 21.5 apart
]


def _find(root: str, tail: str) -> Path:
    hits = sorted(p for p in Path(root).rglob(Path(tail).name) if str(p).endswith(tail))
    assert hits, f"{tail} not under {root}"
    return hits[0]


def _signature(path):
    image = FileImages([path]).load(0)
    return np.array([nd.phash(image)], dtype=np.uint64), nd.thumbnail(image)[None]


def test_checked_real_duplicates_are_found_and_checked_lookalikes_are_not():
    for stamp, clip in CHECKED_DUPLICATES:
        a, b = _signature(_find("/usr/share/tuxpaint/stamps", stamp)), _signature(_find("/usr/share/openclipart/png", clip))
        assert nd.matches(a, b) == [0], (stamp, clip, nd.nearest(a, b))
    for stamp, clip in CHECKED_LOOKALIKES:
        a, b = _signature(_find("/usr/share/tuxpaint/stamps", stamp)), _signature(_find("/usr/share/openclipart/png", clip))
        assert nd.matches(a, b) == [], (stamp, clip, nd.nearest(a, b))


@pytest.mark.slow  # hashes every training source: 21 s
def test_clean_benchmark_drops_the_training_duplicates(monkeypatch):
    """`tuxpaint_categories_clean` against a stand-in training set of the checked duplicates:
    exactly the stamps within the threshold of one of them are dropped (recounted from the distances)."""
    training = FileImages([_find("/usr/share/openclipart/png", clip) for _, clip in CHECKED_DUPLICATES])
    monkeypatch.setattr(clean, "training_signatures", lambda sources=clean.TRAINING_SOURCES: nd.signatures(training))
    monkeypatch.setattr(clean, "LISTS_VERSION", 1)  # the computed matches (version 2 reads the committed lists)
    full = get_benchmark("tuxpaint_categories")
    out = get_benchmark("tuxpaint_categories_clean")
    (qh, qt), (rh, rt) = nd.signatures(full.images), nd.signatures(training)
    # Recounted by brute force over every (stamp, training image) pair.
    expected = {full.images.keys[i] for i in range(len(qh)) for j in range(len(rh))
                if qh[i, 0] != nd.UNREADABLE and rh[j, 0] != nd.UNREADABLE
                and min(bin(int(qh[i, 0]) ^ int(rh[j, 0])).count("1"), bin(int(qh[i, 1]) ^ int(rh[j, 0])).count("1"))
                <= nd.THRESHOLD and nd.rms(qt[i], rt[j]) <= nd.MAX_RMS}
    assert len(expected) >= len(CHECKED_DUPLICATES)
    assert out.excluded == len(expected) and len(out.images) == len(full.images) - len(expected)
    assert not expected & set(out.images.keys)
    assert {str(_find("/usr/share/tuxpaint/stamps", s)) for s, _ in CHECKED_DUPLICATES} <= expected
    assert len(get_benchmark("tuxpaint_categories_clean", max_images=100).images) == 100
