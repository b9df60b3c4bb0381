"""Sane bounds for every number a model file hands us, checked before anything is allocated.

A saved model's manifest, a Hugging Face `config.json` and an image processor's `preprocessor_config.json`
are files someone else may have written.  Their numbers size tensors: an `image_size` of 20,000 is a 4.8 GB
probe tensor, an `embed_dim` of 10^7 a 51 GB projection, a `hidden_size` of 65,536 a 17 GB layer.  Each
limit below sits far above every real model (the reason says which real model comes closest), so only a
damaged or hostile file meets one; it is then one line naming the file, the field, the value and the limit.

The fields are checked one by one; `check_parameter_count` then bounds what they make together (a config
can keep every field in range and still describe a model larger than the machine).
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

from locktune.errors import LocktuneError

# field -> (largest accepted value, why that is far above real models).  Also the smallest accepted value is
# 1 (a size of 0 or below builds nothing useful), except where MIN_ZERO says 0 is meaningful.
LIMITS: dict[str, tuple[int, str]] = {
    # Widths: ViT-22B is 6144 wide, the largest open language models 16384.
    "hidden_size": (16384, "the widest real encoders are 6144 (ViT-22B) to 16384"),
    "d_model": (16384, "T5-XXL is 4096 wide"),
    "embed_dim": (16384, "real embeddings are 256 to 4096 wide"),
    "projection_dim": (16384, "real projections are 512 to 1536 wide"),
    "pooler_output_size": (16384, "real poolers are as wide as the encoder (<= 6144)"),
    "hidden_sizes": (16384, "ConvNeXt-XXL's widest stage is 3072"),
    "clip_width": (16384, "a from-scratch CLIP text tower is 256 to 1024 wide"),
    "text_width": (16384, "a from-scratch text tower (clip, t5_encoder) is 256 to 1024 wide"),
    # Feed-forward widths: ViT-22B 24576, T5-XXL 10240, large language models up to 53248.
    "intermediate_size": (65536, "the widest real feed-forward layers are 24576 (ViT-22B) to 53248"),
    "d_ff": (65536, "T5-XXL's feed-forward is 10240 wide"),
    "mlp_dim": (65536, "the widest real feed-forward layers are under 53248"),
    "d_kv": (4096, "T5's key/value heads are 64 to 128 wide"),
    # Depth: ViT-22B has 48 layers, the deepest open language models 126.
    "num_hidden_layers": (128, "the deepest real encoders have 48 (ViT-22B) to 126 layers"),
    "num_layers": (128, "T5-XXL has 24 layers"),
    "clip_layers": (128, "a from-scratch CLIP text tower has 4 to 24 layers"),
    "text_layers": (128, "a from-scratch text tower (clip, t5_encoder) has 4 to 24 layers"),
    "depths": (128, "ConvNeXt-XXL's deepest stage has 30 blocks"),
    # An mlp head (`model/heads.py`): FuseMix's adapters have 1 to 4 blocks, 4 x the tower's width.
    "head_mlp_depth": (128, "real MLP heads have 1 to 4 layers"),
    "head_mlp_width": (65536, "real MLP heads are 4 x a tower's width (<= 24576)"),
    "num_attention_heads": (256, "real models have at most 128 heads"),
    "num_heads": (256, "real models have at most 128 heads"),
    "num_key_value_heads": (256, "real models have at most 128 heads"),
    "clip_heads": (256, "a from-scratch CLIP text tower has 4 to 16 heads"),
    "text_heads": (256, "a from-scratch text tower (clip, t5_encoder) has 4 to 16 heads"),
    # Tables: the largest real vocabularies are ~262k (Gemma 3) and 250k (XLM-R, mT5).
    "vocab_size": (1_048_576, "the largest real vocabularies are ~262k tokens"),
    "clip_vocab_size": (1_048_576, "the largest real vocabularies are ~262k tokens"),
    "text_vocab_size": (1_048_576, "the largest real vocabularies are ~262k tokens"),
    "type_vocab_size": (65536, "BERT has 2 token types"),
    # RoPE models declare up to 131072 positions without a table; a learned table that large is caught by the
    # parameter count.
    "max_position_embeddings": (1_048_576, "real text encoders have 512 to 131072 positions"),
    "max_text_len": (65536, "real text encoders read 77 to 8192 tokens"),
    "relative_attention_num_buckets": (65536, "T5 has 32 buckets"),
    "relative_attention_max_distance": (1_048_576, "T5 reaches 128 tokens"),
    "num_register_tokens": (1024, "DINOv2 has 4 registers"),
    # Pixels: SAM reads 1024 px, the largest real vision towers 896 to 1536.  A 2048 px probe is 50 MB.
    "image_size": (2048, "real vision towers read 224 to 1536 px"),
    "resize_to": (4096, "a resize before a 2048 px crop never needs more"),
    "patch_size": (1024, "real patches are 8 to 32 px"),
    "window_size": (2048, "Swin's windows are 7 to 24 patches"),
    "num_channels": (16, "images have 3 channels"),
}
MIN_ZERO = {"image_size", "head_mlp_width", "resize_to", "num_register_tokens", "type_vocab_size", "num_key_value_heads",
            "relative_attention_num_buckets", "relative_attention_max_distance"}
# The tokens a vision tower attends over at once ((pixels / patch)^2): SigLIP-so400m has 729, PaliGemma-896
# 4096; 16384 is a 128 x 128 grid.
MAX_PATCH_TOKENS = 16384
# Normalisation: pixels are in [0, 1]; real means lie in [0, 1] and real stds in [0.2, 1].  A std of 0 makes
# every pixel infinite (every embedding zero or NaN); one below 1e-3 blows a 1/255 step up to over 3.9.
STD_RANGE = (1e-3, 100.0)
MEAN_RANGE = (-10.0, 10.0)
# Parameters a tower built from a config may have: ViT-22B, the largest vision tower there is, has 22e9.
MAX_TOWER_PARAMETERS = 25_000_000_000


def refuse(where: str, field: str, value: Any, limit: str, remedy: str = "") -> LocktuneError:
    """The one-line error for a number out of bounds: `where` names the file (and tower)."""
    return LocktuneError(f"{where}: {field} = {value!r} is {limit}; "
                         + (remedy or "the file is damaged or was edited; fix the value or use another model"))


def check_number(value: Any, where: str, field: str, key: str | None = None, remedy: str = "") -> int:
    """`value` as an int within LIMITS[key] (key: the field's last name by default); else the one-line error."""
    key = key or field.rsplit(".", 1)[-1]
    largest, why = LIMITS[key]
    smallest = 0 if key in MIN_ZERO else 1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise refuse(where, field, value, "not a whole number", remedy)
    if value < smallest:
        raise refuse(where, field, value, f"below {smallest}", remedy)
    if value > largest:
        raise refuse(where, field, value, f"above the limit {largest} ({why})", remedy)
    return int(value)


def _numbers(tree: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted field, limit key, value) for every limited field in a config tree (sub-configs included)."""
    if not isinstance(tree, dict):
        return
    for name, value in tree.items():
        field = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _numbers(value, field + ".")
        elif name in LIMITS and value is not None:
            if isinstance(value, (list, tuple)):  # per-stage widths and depths
                for i, item in enumerate(value):
                    yield f"{field}[{i}]", name, item
            else:
                yield field, name, value


def check_config_tree(tree: dict, where: str) -> None:
    """Every limited number in a config dict (a transformers config's `to_dict()`, a manifest's model)."""
    for field, key, value in _numbers(tree):
        check_number(value, where, field, key)


def check_patch_tokens(pixels: int, patch: Any, where: str) -> None:
    """A vision transformer at `pixels` px with `patch` px patches attends over a bounded number of tokens."""
    if isinstance(patch, (list, tuple)):
        patch = min(patch) if patch else 0
    if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
        return  # not a patch model (convolutional): nothing to bound
    tokens = (pixels // patch) ** 2
    if tokens > MAX_PATCH_TOKENS:
        raise refuse(where, "patch_size", patch, f"{tokens} patch tokens at {pixels} px, above the limit "
                     f"{MAX_PATCH_TOKENS} (real towers attend over 196 to 4096)")


def check_normalisation(mean: Any, std: Any, where: str, fields: tuple[str, str] = ("mean", "std")) -> None:
    """Mean and std: 1 or 3 finite numbers each, std within STD_RANGE (never 0), mean within MEAN_RANGE."""
    for field, values, (low, high) in ((fields[0], mean, MEAN_RANGE), (fields[1], std, STD_RANGE)):
        items = list(values) if isinstance(values, (list, tuple)) else None
        if items is None or len(items) not in (1, 3):
            raise refuse(where, field, values, "not 1 or 3 numbers (one per RGB channel)",
                         "write one number per channel, e.g. [0.5, 0.5, 0.5]")
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                raise refuse(where, field, values, "not all finite numbers", "write one number per channel")
            if not low <= item <= high:
                what = ("0: every pixel would divide by zero and every embedding come out zero"
                        if field == fields[1] and item == 0 else f"outside [{low:g}, {high:g}]")
                raise refuse(where, field, values, what, "real models use values such as mean [0.5, 0.5, 0.5], "
                             "std [0.5, 0.5, 0.5]; fix the file or use another model")


def memory_bytes() -> int:
    """This machine's physical memory (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def check_parameter_total(count: int, where: str) -> None:
    """Refuse `count` parameters above MAX_TOWER_PARAMETERS or above this machine's memory in float32."""
    field = "the parameter count of its architecture"
    if count > MAX_TOWER_PARAMETERS:
        raise refuse(where, field, count, f"above the limit {MAX_TOWER_PARAMETERS} (ViT-22B, the largest "
                     "vision tower, has 22e9)")
    memory = memory_bytes()
    if memory and count * 4 > memory:
        raise refuse(where, field, count, f"{count * 4 / 2**30:.1f} GB in float32, more than this machine's "
                     f"{memory / 2**30:.1f} GB of memory", "use a smaller model, or a machine with more memory")


def check_parameter_count(build, where: str) -> None:
    """Build the module on the meta device (shapes only, no memory), count its parameters and buffers, and
    refuse too many (`check_parameter_total`) before `build()` runs for real."""
    import torch

    with torch.device("meta"):
        module = build()
    count = sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())
    del module
    check_parameter_total(count, where)
