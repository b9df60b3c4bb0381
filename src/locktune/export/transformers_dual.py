"""A locktune model whose towers are both Hugging Face models, as a transformers `VisionTextDualEncoderModel`.

The folder loads with transformers alone (no locktune); its README.md holds a snippet that runs as written:

    model = VisionTextDualEncoderModel.from_pretrained(FOLDER)
    processor = VisionTextDualEncoderProcessor.from_pretrained(FOLDER)   # tokenizer + image processor
    outputs = model(**processor(text=texts, images=images, ...))         # image_embeds / text_embeds are
                                                                         # locktune's embeddings

`VisionTextDualEncoderModel` embeds with each tower's `pooler_output`, a linear projection and L2
normalisation, so it represents a locktune model exactly only when both towers pool with `pooler`
(model.image_pool=pooler model.text_pool=pooler); any other pooling is refused with one line, never
exported as an approximation.  A vision transformer trained at another pixel size than its config's is
written at the trained size: its position embeddings interpolated once, exactly as its forward interpolates
them at that size, so `model(...)` runs there without `interpolate_pos_encoding`.  Images go through the
processor as locktune reads them (EXIF orientation applied, transparency composited on white): the README's
snippet does that itself.  The written folder is reloaded and checked against locktune's embeddings.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from locktune.errors import LocktuneError

PARITY_ATOL = 1e-4  # the export is refused beyond this (float32 noise is ~1e-7)
README = "README.md"


def _towers(net):
    from locktune.towers.image.hf_vision import HFVisionTower
    from locktune.towers.setting import unwrap
    from locktune.towers.text.hf_text import HFTextTower

    return unwrap(net.image_tower), unwrap(net.text_tower), HFVisionTower, HFTextTower


def check_dual_encoder(net) -> None:
    """Raise a one-line LocktuneError unless `net` can be written as a VisionTextDualEncoderModel."""
    # Its projections are one linear map per tower: a linear head (or none, as the identity) and nothing else.
    heads = [f"{side} head '{name}'" for side, name, module, allowed in
             (("image", net.config.image_head, net.image_projection, (torch.nn.Linear, torch.nn.Identity)),
              ("text", net.config.text_head, net.text_projection, (torch.nn.Linear,)))
             if not isinstance(module, allowed)]
    if heads:
        raise LocktuneError(f"--format transformers: VisionTextDualEncoderModel has one linear projection per "
                            f"tower and cannot hold the {' or the '.join(heads)}; use --format locktune (the saved "
                            "folder, which `locktune.load` reads) or --onnx for this model")
    image, text, vision_cls, text_cls = _towers(net)
    others = [f"{side} tower '{getattr(t, 'name', type(t).__name__)}'" for side, t, cls in
              (("image", image, vision_cls), ("text", text, text_cls)) if not isinstance(t, cls)]
    if others:
        raise LocktuneError(f"--format transformers needs two Hugging Face towers (model.image_tower=hf:... and "
                            f"model.text_tower=hf:...); the {' and the '.join(others)} is not one. Use "
                            "--format locktune (and --onnx) for this model")
    if image.pool != "pooler" or text.pool != "pooler":
        raise LocktuneError(f"--format transformers: VisionTextDualEncoderModel embeds with each tower's pooled "
                            f"output, but this model pools the image tower with '{image.pool}' and the text tower "
                            f"with '{text.pool}'; only a model trained with model.image_pool=pooler "
                            "model.text_pool=pooler exports exactly (use --format locktune otherwise)")


def trained_at_another_size(net) -> bool:
    """True when the model runs its image tower at another pixel size than the tower's config (model.image_size)
    with interpolated position embeddings: the export then writes the tower at the trained size
    (`_positions_at`)."""
    image = _towers(net)[0]
    return bool(image.takes_interpolate and net.preprocess.image_size != image.native_size)


def _positions_at(image, size: int) -> torch.Tensor:
    """The tower's position embeddings at `size` px, as its forward computes them there with
    `interpolate_pos_encoding=True`: captured from that call, so the export holds exactly those values."""
    owners = [m for m in image.model.modules() if "interpolate_pos_encoding" in vars(type(m))]
    if len(owners) != 1:
        raise LocktuneError(f"--format transformers: the image tower runs at {size} px, not its config's "
                            f"{image.native_size}, and locktune finds {len(owners)} position-embedding modules in "
                            f"{type(image.model).__name__} (expects one); train it at {image.native_size} px to export")
    owner, captured = owners[0], []

    def recording(*args, **kwargs):
        table = type(owner).interpolate_pos_encoding(owner, *args, **kwargs)
        captured.append(table.detach().clone())
        return table

    owner.interpolate_pos_encoding = recording
    try:
        with torch.no_grad():
            image.model(pixel_values=torch.zeros(1, 3, size, size), interpolate_pos_encoding=True)
    finally:
        del owner.interpolate_pos_encoding
    return captured[-1]


def _vision_state(image, target: torch.nn.Module, size: int) -> dict:
    """The tower's weights for `target` (the same architecture configured at `size` px): every tensor as it
    is, except the position table, which is the one the tower interpolates to at that size."""
    state, shapes = image.model.state_dict(), {k: v.shape for k, v in target.state_dict().items()}
    resized = [k for k in state if k in shapes and state[k].shape != shapes[k]]
    table = _positions_at(image, size) if resized else None
    if len(resized) != 1 or table.numel() != shapes[resized[0]].numel():
        raise LocktuneError(f"--format transformers: writing the image tower at {size} px changes "
                            f"{len(resized)} tensors ({', '.join(resized[:3])}), not one position table locktune "
                            f"can fill; train it at {image.native_size} px to export")
    return {**state, resized[0]: table.reshape(shapes[resized[0]])}


def _with_hidden_size(config, dim: int):
    """A copy of a tower config with `hidden_size` (VisionTextDualEncoderModel sizes its projections from it;
    ConvNeXt-like configs only have `hidden_sizes`)."""
    config = copy.deepcopy(config)
    if getattr(config, "hidden_size", None) != dim:
        if getattr(config, "hidden_size", None) is not None:
            raise LocktuneError(f"--format transformers: the tower's pooled output has {dim} values but its config "
                                f"says hidden_size {config.hidden_size}; VisionTextDualEncoderModel cannot hold it")
        config.hidden_size = dim
    return config


def _log_logit_scale(net) -> float:
    cap = math.log(net.config.logit_scale_max)
    return float(min(net.log_logit_scale.detach().float().item(), cap))


def _build(net):
    from transformers import VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    image, text = _towers(net)[:2]
    vision_cfg = _with_hidden_size(image.model.config, image.output_dim)
    resized = trained_at_another_size(net)
    if resized:  # the size it was trained at: position embeddings of that size, processor of that size
        vision_cfg.image_size = int(net.preprocess.image_size)
    text_cfg = _with_hidden_size(text.encoder.config, text.output_dim)
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision_cfg, text_cfg, projection_dim=int(net.embed_dim), logit_scale_init_value=_log_logit_scale(net))
    dual = VisionTextDualEncoderModel(config).eval()
    vision_state = (_vision_state(image, dual.vision_model, vision_cfg.image_size) if resized
                    else image.model.state_dict())
    # Strict: the classes transformers builds from the configs must hold exactly the towers' weights.
    for name, target, state, source in (("image", dual.vision_model, vision_state, image.model),
                                        ("text", dual.text_model, text.encoder.state_dict(), text.encoder)):
        try:
            target.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise LocktuneError(f"--format transformers: transformers builds the {name} tower as "
                                f"{type(target).__name__}, which does not take {type(source).__name__}'s weights "
                                f"({str(error).splitlines()[0][:160]})") from None
    with torch.no_grad():
        if isinstance(net.image_projection, torch.nn.Linear):
            dual.visual_projection.weight.copy_(net.image_projection.weight)
        else:  # image_head: none -> the pooled output is the shared space
            dual.visual_projection.weight.copy_(torch.eye(image.output_dim))
        dual.text_projection.weight.copy_(net.text_projection.weight)
        dual.logit_scale.fill_(_log_logit_scale(net))
    return dual


def _processor_config(net, image) -> dict:
    """The image tower's preprocessor_config.json, its sizes scaled to the size the model was trained at."""
    from locktune.towers.image.hf_processor import PROCESSOR_FILE

    cfg = json.loads((Path(image.source_folder) / PROCESSOR_FILE).read_text())
    new, native = net.preprocess.image_size, image.native.image_size
    if new != native:
        def scale(value):
            if isinstance(value, bool) or not isinstance(value, (int, dict)):
                return value
            if isinstance(value, int):
                return round(value * new / native)
            return {k: scale(v) for k, v in value.items()}

        for key in ("size", "crop_size"):
            if key in cfg:
                cfg[key] = scale(cfg[key])
    return cfg


def _save_processor(net, image, text, folder: Path) -> None:
    from transformers import AutoImageProcessor, VisionTextDualEncoderProcessor

    from locktune.towers.image.hf_processor import PROCESSOR_FILE

    cfg = _processor_config(net, image)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / PROCESSOR_FILE).write_text(json.dumps(cfg, indent=2))
        image_processor = AutoImageProcessor.from_pretrained(tmp)
    VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=text.hf_tokenizer).save_pretrained(folder)
    image_processor.save_pretrained(folder)  # preprocessor_config.json too: AutoImageProcessor(FOLDER) alone loads


def _probe_inputs(net):
    size = net.preprocess.image_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, size, size, generator=generator)
    tokens = net.tokenize(["a photo of a cat.", "a small red drawing of a house on a hill"])
    return pixels, tokens


def _features(out) -> torch.Tensor:
    """get_*_features returns a ModelOutput (pooler_output projected) in transformers 5, a tensor in 4."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def dual_embeddings(dual, pixels, ids, mask):
    """Image and text embeddings of a VisionTextDualEncoderModel's get_*_features, L2-normalised as locktune's."""
    with torch.no_grad():
        image = _features(dual.get_image_features(pixel_values=pixels))
        text = _features(dual.get_text_features(input_ids=ids, attention_mask=mask))
    return F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)


def _check_parity(net, folder: Path) -> None:
    """The written folder, reloaded by transformers, gives locktune's embeddings at the trained size, through
    get_*_features and through `model(...)` alike."""
    from transformers import VisionTextDualEncoderModel

    pixels, tokens = _probe_inputs(net)
    device = next(net.parameters()).device
    with torch.no_grad():
        image_ref = net.encode_image(pixels.to(device)).float().cpu()
        text_ref = net.encode_text(tokens["ids"].to(device), tokens["mask"].to(device)).float().cpu()
    try:
        reloaded = VisionTextDualEncoderModel.from_pretrained(folder).eval()
        image, text = dual_embeddings(reloaded, pixels, tokens["ids"], tokens["mask"])
        with torch.no_grad():
            forward = reloaded(input_ids=tokens["ids"], attention_mask=tokens["mask"], pixel_values=pixels)
    except (RuntimeError, ValueError, TypeError, AttributeError) as error:
        raise LocktuneError(f"--format transformers: the written model in {folder} does not run in transformers "
                            f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
    worst = {"image": float((image - image_ref).abs().max()), "text": float((text - text_ref).abs().max()),
             "model(...) image": float((forward.image_embeds.float() - image_ref).abs().max()),
             "model(...) text": float((forward.text_embeds.float() - text_ref).abs().max())}
    bad = {k: v for k, v in worst.items() if not v <= PARITY_ATOL}
    if bad:
        raise LocktuneError(f"--format transformers: the written model in {folder} gives other embeddings than "
                            f"locktune's ({', '.join(f'{k} differs by {v:.1e}' for k, v in bad.items())}); "
                            "use --format locktune for this model")


# Measured with `benchmarks/transparency_effect.py --model runs/demo --count 60`: the demo model
# (efficientnet_lite0 + minilm) on 60 Tux Paint stamps with transparent pixels, each embedded as locktune reads
# it (composited on white) and with its alpha channel dropped.
TRANSPARENCY_FIGURE = ("measured with locktune's demo model on 60 Tux Paint stamps with transparency, the "
                       "embeddings differ by up to 0.28 in a component (median 0.08), and their cosine to the "
                       "right embedding is 0.90 at the median and -0.11 at worst (a black digit on transparent "
                       "black pixels).")
EXAMPLE_IMAGE = "example.png"


def _write_example(folder: Path) -> None:
    """A small transparent PNG (a red disc and a half-transparent bar on nothing) that the README's snippet
    embeds, so the snippet runs as written."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (96, 72), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((18, 6, 78, 66), fill=(215, 35, 35, 255))
    draw.rectangle((0, 60, 95, 71), fill=(20, 60, 200, 128))
    image.save(folder / EXAMPLE_IMAGE)


def readme_snippet(net, folder: Path) -> str:
    """The README's Python snippet: runs as written (transformers, torch and Pillow only) from the folder the
    export was written from, on the example image; its embeddings are locktune's."""
    size, length = net.preprocess.image_size, net.config.max_text_len
    return f'''import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers import VisionTextDualEncoderModel, VisionTextDualEncoderProcessor

FOLDER = {json.dumps(str(folder))}  # this folder
image_files = [FOLDER + "/{EXAMPLE_IMAGE}"]  # your images
texts = ["a red circle", "a blue square"]


def open_image(path):
    """As locktune reads an image: EXIF orientation applied, transparency composited on white."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")


model = VisionTextDualEncoderModel.from_pretrained(FOLDER).eval()
processor = VisionTextDualEncoderProcessor.from_pretrained(FOLDER)
inputs = processor(text=texts, images=[open_image(path) for path in image_files], padding="max_length",
                   truncation=True, max_length={length}, return_tensors="pt")  # images resized to {size}x{size}
with torch.no_grad():
    outputs = model(**inputs)
image_embeddings = F.normalize(outputs.image_embeds, dim=-1)  # [images, {int(net.embed_dim)}]: locktune's encode_image
text_embeddings = F.normalize(outputs.text_embeds, dim=-1)  # [texts, {int(net.embed_dim)}]: locktune's encode_text
print(outputs.logits_per_image)  # trained scale x cosine, [images, texts]
'''


def _write_readme(net, folder: Path) -> None:
    import textwrap

    _write_example(folder)
    size = net.preprocess.image_size
    paragraphs = [
        f"**Open images as `open_image` does.** locktune applies the EXIF orientation and composites "
        f"transparency (RGBA, LA and palette PNGs) on white before the image processor; do the same, or the "
        f"embeddings are not the model's. Without it some processors refuse RGBA images (ViT's: `mean must have "
        f"4 elements`), and dropping the alpha channel (`image.convert(\"RGB\")`) shows the colours hidden "
        f"under transparent pixels: {TRANSPARENCY_FIGURE}",
        f"The image tower runs at {size}x{size} pixels, the size it was trained at (its config and the "
        f"processor say so). One side at a time: `model.get_image_features(pixel_values=...)` and "
        f"`model.get_text_features(input_ids=..., attention_mask=...)` (their `.pooler_output` in transformers "
        f"5), then L2-normalise. The model was trained with texts of at most {net.config.max_text_len} tokens; "
        f"`outputs.logits_per_image` is the trained scale times the cosine (`model.logit_scale` holds the "
        f"scale's log, as in CLIP).{_sigmoid_note(net)}",
    ]
    (folder / README).write_text(f"""# locktune model as a transformers VisionTextDualEncoderModel

Exported by locktune (towers: {net.config.image_tower} / {net.config.text_tower}, setting {net.config.setting}).
Loads with transformers alone; this runs as it is, on `{EXAMPLE_IMAGE}` (a transparent PNG) beside this file:

```python
{readme_snippet(net, folder).rstrip()}
```

""" + "\n\n".join(textwrap.fill(p, 110, break_on_hyphens=False) for p in paragraphs) + "\n")


def _sigmoid_note(net) -> str:
    """A sigmoid-trained model's bias has no place in VisionTextDualEncoderModel: the README carries it."""
    bias = getattr(net, "logit_bias", None)
    if bias is None:
        return ""
    return (f" It was trained with the pairwise sigmoid loss (SigLIP): the probability that a text matches an "
            f"image is `sigmoid(logits_per_image + b)` with the learned bias b = {float(bias.detach()):.6g}, "
            "for each text on its own (not a softmax over texts).")


def export_dual_encoder(net, folder: str | Path) -> Path:
    """Write `net` (a TwoTower with two Hugging Face towers pooled with `pooler`) as a VisionTextDualEncoderModel
    folder with its tokenizer and image processor; checked to reload with the same embeddings.  Returns the folder."""
    check_dual_encoder(net)
    from locktune.towers.hf_common import hf_quiet

    hf_quiet()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    image, text = _towers(net)[:2]
    _build(net).save_pretrained(folder)
    _save_processor(net, image, text, folder)
    _write_readme(net, folder)
    _check_parity(net, folder)
    return folder
