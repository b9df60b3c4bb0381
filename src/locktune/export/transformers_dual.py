"""A locktune model whose towers are both Hugging Face models, as a transformers `VisionTextDualEncoderModel`.

The folder loads with transformers alone (no locktune):

    model = VisionTextDualEncoderModel.from_pretrained(FOLDER)
    processor = VisionTextDualEncoderProcessor.from_pretrained(FOLDER)   # tokenizer + image processor
    image = model.get_image_features(pixel_values=...).pooler_output     # then L2-normalise: locktune's
    text = model.get_text_features(input_ids=..., attention_mask=...).pooler_output   # embeddings

`VisionTextDualEncoderModel` embeds with each tower's `pooler_output`, a linear projection and L2
normalisation, so it represents a locktune model exactly only when both towers pool with `pooler`
(model.image_pool=pooler model.text_pool=pooler); any other pooling is refused with one line, never
exported as an approximation.  The written folder is reloaded and checked against locktune's embeddings.
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


def needs_interpolation(net) -> bool:
    """True when the model runs its image tower at another pixel size than the tower's config (model.image_size):
    transformers then needs `interpolate_pos_encoding=True` in `get_image_features`."""
    image = _towers(net)[0]
    return bool(image.takes_interpolate and net.preprocess.image_size != image.native_size)


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
    text_cfg = _with_hidden_size(text.encoder.config, text.output_dim)
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision_cfg, text_cfg, projection_dim=int(net.embed_dim), logit_scale_init_value=_log_logit_scale(net))
    dual = VisionTextDualEncoderModel(config).eval()
    # Strict: the classes transformers builds from the configs must hold exactly the towers' weights.
    for name, target, source in (("image", dual.vision_model, image.model), ("text", dual.text_model, text.encoder)):
        try:
            target.load_state_dict(source.state_dict(), strict=True)
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


def dual_embeddings(dual, pixels, ids, mask, interpolate: bool = False):
    """Image and text embeddings of a VisionTextDualEncoderModel, L2-normalised as locktune's."""
    kwargs = {"interpolate_pos_encoding": True} if interpolate else {}
    with torch.no_grad():
        image = _features(dual.get_image_features(pixel_values=pixels, **kwargs))
        text = _features(dual.get_text_features(input_ids=ids, attention_mask=mask))
    return F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)


def _check_parity(net, folder: Path) -> None:
    from transformers import VisionTextDualEncoderModel

    pixels, tokens = _probe_inputs(net)
    device = next(net.parameters()).device
    with torch.no_grad():
        image_ref = net.encode_image(pixels.to(device)).float().cpu()
        text_ref = net.encode_text(tokens["ids"].to(device), tokens["mask"].to(device)).float().cpu()
    try:
        reloaded = VisionTextDualEncoderModel.from_pretrained(folder).eval()
        image, text = dual_embeddings(reloaded, pixels, tokens["ids"], tokens["mask"], needs_interpolation(net))
    except (RuntimeError, ValueError, TypeError, AttributeError) as error:
        raise LocktuneError(f"--format transformers: the written model in {folder} does not run in transformers "
                            f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
    worst = {"image": float((image - image_ref).abs().max()), "text": float((text - text_ref).abs().max())}
    bad = {k: v for k, v in worst.items() if not v <= PARITY_ATOL}
    if bad:
        raise LocktuneError(f"--format transformers: the written model in {folder} gives other embeddings than "
                            f"locktune's ({', '.join(f'{k} differs by {v:.1e}' for k, v in bad.items())}); "
                            "use --format locktune for this model")


def _write_readme(net, folder: Path) -> None:
    call = ("model.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True)"
            if needs_interpolation(net) else "model.get_image_features(pixel_values=pixels)")
    (folder / README).write_text(f"""# locktune model as a transformers VisionTextDualEncoderModel

Exported by locktune (towers: {net.config.image_tower} / {net.config.text_tower}, setting {net.config.setting}).
Loads with transformers alone:

```python
import torch.nn.functional as F
from transformers import VisionTextDualEncoderModel, VisionTextDualEncoderProcessor

model = VisionTextDualEncoderModel.from_pretrained(FOLDER).eval()
processor = VisionTextDualEncoderProcessor.from_pretrained(FOLDER)
pixels = processor(images=images, return_tensors="pt").pixel_values      # {net.preprocess.image_size}x{net.preprocess.image_size}
tokens = processor(text=texts, padding="max_length", truncation=True, max_length={net.config.max_text_len},
                   return_tensors="pt")
image_embeddings = F.normalize({call}.pooler_output, dim=-1)
text_embeddings = F.normalize(model.get_text_features(input_ids=tokens.input_ids,
                                                      attention_mask=tokens.attention_mask).pooler_output, dim=-1)
```

The model was trained with texts of at most {net.config.max_text_len} tokens; `model(...)` gives the
logits with the trained temperature (`logit_scale` holds its log).{_sigmoid_note(net)}
""")


def _sigmoid_note(net) -> str:
    """A sigmoid-trained model's bias has no place in VisionTextDualEncoderModel: the README carries it."""
    bias = getattr(net, "logit_bias", None)
    if bias is None:
        return ""
    return (f"\n\nIt was trained with the pairwise sigmoid loss (SigLIP): the probability that a text matches an "
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
