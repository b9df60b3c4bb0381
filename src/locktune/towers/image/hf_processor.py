"""A Hugging Face image-processor config (`preprocessor_config.json`) -> locktune's own `Preprocess`.

Only the steps locktune can reproduce exactly are accepted (resize, centre crop, rescale by 1/255,
normalise); a config asking for anything else (padding, another rescale factor, non-square output) is
one line naming the field, so the cache, saved models, ONNX export and the server never apply a transform
other than the one the tower was trained with.  Checked against transformers' own processors in the tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from locktune.errors import LocktuneError
from locktune.towers.hub import read_json
from locktune.towers.image.preprocess import Preprocess
from locktune.towers.limits import check_normalisation, check_number, refuse

PROCESSOR_FILE = "preprocessor_config.json"
# PIL's resampling enum, as transformers stores it.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Flags that change pixels in ways that have no counterpart here (reported by name when set).
HANDLED_FLAGS = {"do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"}
HARMLESS_FLAGS = {"do_reduce_labels", "do_flip_channel_order"}  # labels only / handled below


def _side(value, what: str, field: str, path: Path) -> int:
    """A size field as one side in pixels: an int, or {height, width} with height == width; checked against
    the pixel limit (`limits.py`) before anything is sized from it."""
    where = f"{what}: '{path}'"
    if isinstance(value, int) and not isinstance(value, bool):
        return check_number(value, where, field, "image_size")
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            if value["height"] != value["width"]:
                raise LocktuneError(f"{what}: {field} {value} is not square; locktune feeds square images. Save a "
                                    "processor with a square size, or use model.image_size=N")
            return check_number(value["height"], where, f"{field}.height", "image_size")
        if set(value) == {"shortest_edge"}:
            return check_number(value["shortest_edge"], where, f"{field}.shortest_edge", "image_size")
    raise LocktuneError(f"{what}: {field} {value!r} is a size locktune does not understand (it reads an int, "
                        "{height, width} or {shortest_edge}); edit preprocessor_config.json")


def preprocess_from_processor(folder: Path, what: str) -> Preprocess:
    """The tower's pretraining preprocessing at its native size, from `folder`'s image-processor config."""
    path = Path(folder) / PROCESSOR_FILE
    if not path.is_file():
        raise LocktuneError(f"{what}: '{folder}' has no {PROCESSOR_FILE}, so locktune cannot know how the tower "
                            "expects its pixels (size, crop, mean/std). Save the image processor beside the model "
                            "(AutoImageProcessor.from_pretrained(ID).save_pretrained(FOLDER))")
    cfg = read_json(path, what)
    for key, value in cfg.items():
        if key.startswith("do_") and value and key not in HANDLED_FLAGS | HARMLESS_FLAGS:
            raise LocktuneError(f"{what}: {PROCESSOR_FILE} sets '{key}', a step locktune does not reproduce; "
                                "set it to false if the tower does not need it, or preprocess the images yourself")
    if cfg.get("do_flip_channel_order"):
        raise LocktuneError(f"{what}: {PROCESSOR_FILE} sets 'do_flip_channel_order' (BGR input); not supported")
    factor = cfg.get("rescale_factor", 1 / 255)
    if cfg.get("do_rescale", True) and (not isinstance(factor, (int, float)) or abs(float(factor) * 255 - 1) > 1e-6):
        raise LocktuneError(f"{what}: rescale_factor {cfg.get('rescale_factor')} is not 1/255; locktune scales "
                            "pixels to [0, 1] before normalising")
    if not cfg.get("do_rescale", True):
        raise LocktuneError(f"{what}: {PROCESSOR_FILE} has do_rescale false (pixels in 0-255); not supported")
    resample = cfg.get("resample", 3)
    resample = PIL_RESAMPLE.get(resample, resample) if isinstance(resample, int) else str(resample).lower()
    if cfg.get("do_normalize", True):
        # One number (or a list of one) stands for all three channels, as transformers reads it.
        mean, std = ([v] if isinstance(v, (int, float)) else v for v in (cfg.get("image_mean"), cfg.get("image_std")))
        # Finite, std never 0 (every pixel infinite, every embedding zero), one per channel: before any image.
        check_normalisation(mean, std, f"{what}: '{path}'", ("image_mean", "image_std"))
        mean, std = (v * 3 if len(v) == 1 else v for v in (mean, std))
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    mean, std = tuple(float(x) for x in mean), tuple(float(x) for x in std)
    if not cfg.get("do_resize", True):
        raise LocktuneError(f"{what}: {PROCESSOR_FILE} has do_resize false; locktune needs a fixed input size")
    size_field = cfg.get("size")
    short_mode = isinstance(size_field, dict) and "shortest_edge" in size_field
    size = _side(size_field, what, "size", path)
    if "crop_pct" in cfg and short_mode and not cfg.get("do_center_crop"):
        # ConvNeXt's rule: below 384 px resize the short side to size / crop_pct, then crop size; else warp.
        crop_pct = cfg["crop_pct"]
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0.1 <= crop_pct <= 1.0:
            raise refuse(f"{what}: '{path}'", "crop_pct", crop_pct, "outside [0.1, 1] (real models use 0.875 to 1)")
        if size < 384:
            return Preprocess(size, mean, std, resize="shortest_edge", resample=resample,
                              resize_to=int(size / float(crop_pct)))
        return Preprocess(size, mean, std, resize="stretch", resample=resample)
    if cfg.get("do_center_crop"):
        crop = _side(cfg.get("crop_size", size), what, "crop_size", path)
        if not short_mode:  # resize to a square, then crop: the same as shortest_edge on the square
            return _square_then_crop(size, crop, mean, std, resample, what)
        return Preprocess(crop, mean, std, resize="shortest_edge", resample=resample, resize_to=size)
    if short_mode:  # shortest edge, no crop: only a square image would be square; crop its centre
        return Preprocess(size, mean, std, resize="shortest_edge", resample=resample, resize_to=size)
    return Preprocess(size, mean, std, resize="stretch", resample=resample)


def _square_then_crop(size: int, crop: int, mean, std, resample, what: str) -> Preprocess:
    if crop == size:
        return Preprocess(size, mean, std, resize="stretch", resample=resample)
    raise LocktuneError(f"{what}: resizing to {size}x{size} (aspect ratio lost) then cropping {crop} is not a "
                        "transform locktune reproduces; use size {'shortest_edge': N} with the crop")


def scaled(preprocess: Preprocess, image_size: int) -> Preprocess:
    """The same recipe at another size (model.image_size): the resize target scales with the crop."""
    if not image_size or image_size == preprocess.image_size:
        return preprocess
    resize_to = round(preprocess.resize_to * image_size / preprocess.image_size) if preprocess.resize_to else 0
    return dataclasses.replace(preprocess, image_size=image_size, resize_to=resize_to)
