"""What `LitModel.encode_image` / `preprocess` accept, and what they refuse with one line naming the input.

Pixel tensors are never resized or guessed at: a tensor of another channel count, rank or size than the
image tower takes is an error that says what the model expects.  Raw images (paths, PIL, numpy) are decoded
and resized as training does it, transparency composited on white by the same function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from test_api import shapes_images, tiny_net


@pytest.fixture(scope="module")
def model():
    from locktune.api import LitModel

    return LitModel(tiny_net())  # a 64-px image tower


def _refused(call, pattern: str) -> str:
    from locktune.errors import LocktuneError

    with pytest.raises(LocktuneError, match=pattern) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("shape, name", [
    ((2, 4, 64, 64), "four channels (RGBA pixels)"),
    ((2, 1, 64, 64), "one channel (grey pixels)"),
    ((64, 64), "rank 2"),
    ((1, 2, 3, 64, 64), "rank 5"),
    ((5, 5, 7), "rank 3, not an image"),
    ((2, 3, 32, 32), "another size"),
])
def test_a_pixel_tensor_of_another_layout_is_one_error_naming_what_the_model_takes(model, shape, name):
    message = _refused(lambda: model.encode_image(torch.zeros(shape)), r"^images: expected \(N, 3, 64, 64\) float "
                       r"pixels as from model.preprocess")
    assert message.endswith(f"got {shape}") or f"got {shape};" in message, name
    _refused(lambda: model.preprocess(torch.zeros(shape)), r"^images: expected \(N, 3, 64, 64\)")


def test_a_tensor_in_a_list_is_named_by_its_place(model):
    good = torch.zeros(3, 64, 64)
    _refused(lambda: model.encode_image([good, torch.zeros(3, 48, 48)]),
             r"^image 1: expected \(3, 64, 64\) float pixels as from model.preprocess; got \(3, 48, 48\)")
    _refused(lambda: model.encode_image([good, torch.zeros(1, 3, 64, 64)]), r"^image 1: expected \(3, 64, 64\)")


def test_integer_and_non_finite_pixel_tensors_are_refused(model):
    _refused(lambda: model.encode_image(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)),
             r"^images: expected .* got uint8 values \(pass raw images as PIL images, paths or numpy arrays\)")
    pixels = torch.zeros(2, 3, 64, 64)
    pixels[1, 0, 5, 5] = float("nan")
    _refused(lambda: model.encode_image(pixels), "^images: the pixel tensor holds NaN or infinite values")


def test_pixels_of_another_size_are_refused_not_silently_embedded():
    """Before: a 64-px tensor given to a 128-px model was embedded as it was, close to the right embedding
    (cosine 0.84 on the demo model) but wrong; now it is refused, and the same picture as PIL is resized."""
    from locktune.api import LitModel
    from locktune.errors import LocktuneError

    model = LitModel(tiny_net(image_size=128))
    image = shapes_images()["red"]
    small = LitModel(tiny_net()).preprocess(image)  # the same picture preprocessed at 64 px
    assert small.shape == (3, 64, 64)
    with pytest.raises(LocktuneError, match=r"^images: expected \(N, 3, 128, 128\) float pixels as from "
                                            r"model.preprocess \(or \(3, 128, 128\) for one image\); got "
                                            r"\(3, 64, 64\); pass PIL images, paths or numpy arrays"):
        model.encode_image(small)
    right = model.encode_image(image)
    assert right.shape == (1, model.embed_dim)
    torch.testing.assert_close(model.encode_image(model.preprocess(image)), right, atol=1e-6, rtol=0)


def test_a_numpy_array_of_no_image_layout_is_refused_not_read_as_a_batch(model):
    """(5, 5, 7) used to be 5 grey 5 x 7 images, 5 embeddings."""
    for shape in [(5, 5, 7), (2, 3, 64, 64), (4, 4, 4, 4, 3), (7,)]:
        _refused(lambda: model.encode_image(np.zeros(shape, np.uint8)),
                 rf"^images: a numpy image should be H x W x 3 .* got shape {tuple(shape)}".replace("(", r"\(")
                 .replace(")", r"\)"))
    _refused(lambda: model.encode_image([np.zeros((8, 8, 3), np.uint8), np.zeros((5, 5, 7), np.uint8)]),
             r"^image 1: a numpy image should be")


def test_numpy_values_out_of_range_are_refused_not_clipped(model):
    """A float image holding 0-255 values would have been clipped to all white."""
    _refused(lambda: model.encode_image(np.full((8, 8, 3), 200.0, np.float32)),
             r"^image 0: float32 pixels should lie in \[0, 1\], got values from 200 to 200; pass uint8 for 0-255")
    _refused(lambda: model.encode_image(np.full((8, 8, 3), 300, np.int32)), r"int32 pixels should lie in \[0, 255\]")
    nan = np.zeros((8, 8, 3), np.float32)
    nan[0, 0, 0] = np.nan
    _refused(lambda: model.encode_image(nan), "should lie in")
    # Whole numbers in range of any integer type are pixels as uint8 would be.
    array = np.asarray(shapes_images()["green"])
    torch.testing.assert_close(model.encode_image(array.astype(np.int64)), model.encode_image(array), atol=0, rtol=0)


def test_grey_and_batched_numpy_images(model):
    grey = np.asarray(shapes_images()["blue"].convert("L"))
    one = model.encode_image(grey)
    torch.testing.assert_close(model.encode_image(grey[..., None]), one, atol=0, rtol=0)
    torch.testing.assert_close(model.encode_image(np.stack([grey[..., None]] * 3, axis=-1)[..., 0]), one,
                               atol=1e-6, rtol=0)
    rgb = np.stack([np.asarray(shapes_images()[c]) for c in ("red", "green", "blue")])
    batch = model.encode_image(rgb)
    assert batch.shape == (3, model.embed_dim)
    torch.testing.assert_close(batch[2], model.encode_image(rgb[2])[0], atol=1e-6, rtol=0)
    assert model.encode_image([]).shape == (0, model.embed_dim)
    assert model.preprocess([]).shape == (0, 3, 64, 64)


def test_images_of_any_size_are_resized_by_preprocess(model, tmp_path):
    wide = Image.new("RGB", (300, 40), (200, 30, 30))
    wide.save(tmp_path / "wide.png")
    pixels = model.preprocess(str(tmp_path / "wide.png"))
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.float32
    torch.testing.assert_close(model.preprocess(wide), pixels, atol=0, rtol=0)
    torch.testing.assert_close(model.encode_image(tmp_path / "wide.png"), model.encode_image(pixels), atol=1e-6,
                               rtol=0)


def _transparent_images(tmp_path) -> dict[str, Image.Image]:
    """A red disc on a transparent background whose hidden colour is black, as RGBA, LA and palette PNGs."""
    rgba = np.zeros((48, 64, 4), np.uint8)
    yy, xx = np.mgrid[:48, :64]
    disc = (yy - 24) ** 2 + (xx - 32) ** 2 < 18 ** 2
    rgba[disc] = (220, 30, 30, 255)
    rgba[(yy < 6) & ~disc] = (0, 0, 0, 128)  # a half-transparent band
    la = np.stack([rgba[..., 0], rgba[..., 3]], axis=-1)
    palette = Image.fromarray(rgba[..., :3]).quantize(4)
    palette.info["transparency"] = palette.getpixel((1, 40))  # the hidden colour's index: see-through
    out = {"RGBA": Image.fromarray(rgba, "RGBA"), "LA": Image.fromarray(la, "LA"), "P": palette}
    for mode, image in out.items():
        image.save(tmp_path / f"{mode}.png")
    return out


def _on_white(array: np.ndarray) -> np.ndarray:
    """Alpha compositing on white, written out: colour * alpha + 255 * (1 - alpha), rounded."""
    colour, alpha = array[..., :-1].astype(np.float64), array[..., -1:].astype(np.float64) / 255.0
    out = np.rint(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def test_transparency_is_composited_on_white_as_training_does(model, tmp_path):
    """RGBA, LA and palette PNGs: `preprocess` gives bit for bit the pixels training gives the same file
    (`FileImages` and the pixel cache's `pixels` + `normalize`), and those are the image composited on white
    (checked against the formula, within a rounding step), not on the hidden black."""
    from locktune.data.images import FileImages

    net = model.net
    for mode, image in _transparent_images(tmp_path).items():
        path = tmp_path / f"{mode}.png"
        training = net.preprocess.normalize(net.preprocess.pixels(FileImages([path]).load(0)))
        for given in (str(path), Image.open(path), image):
            torch.testing.assert_close(model.preprocess(given), training, atol=0, rtol=0, msg=mode)
        opened = Image.open(path)
        with_alpha = np.asarray(opened.convert("RGBA") if mode == "P" else opened)
        white = net.preprocess(Image.fromarray(_on_white(with_alpha)))
        assert float((model.preprocess(str(path)) - white).abs().max()) <= 2.1 / 255 / min(net.preprocess.std), mode
        black = net.preprocess(Image.fromarray(np.asarray(opened.convert("RGB"))))  # the hidden colours, no tRNS
        assert float((model.preprocess(str(path)) - black).abs().max()) > 0.5, mode
    # An RGBA numpy array goes the same way.
    rgba = np.asarray(Image.open(tmp_path / "RGBA.png"))
    torch.testing.assert_close(model.encode_image(rgba), model.encode_image(str(tmp_path / "RGBA.png")), atol=1e-6,
                               rtol=0)


def test_preprocess_of_a_path_is_what_encode_image_runs_on(model, tmp_path):
    """`model.preprocess("x.png")` used to raise AttributeError (it was the transform, which takes PIL only)."""
    shapes_images()["red"].save(tmp_path / "x.png")
    pixels = model.preprocess(str(tmp_path / "x.png"))
    assert pixels.shape == (3, 64, 64)
    torch.testing.assert_close(model.encode_image(pixels[None]), model.encode_image(str(tmp_path / "x.png")),
                               atol=1e-6, rtol=0)
    batch = model.preprocess([tmp_path / "x.png", shapes_images()["blue"]])
    assert batch.shape == (2, 3, 64, 64)
    torch.testing.assert_close(batch[0], pixels, atol=0, rtol=0)
