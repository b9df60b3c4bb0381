"""What `locktune towers` shows: the tower kinds, the bundled towers, and one tower's facts by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from locktune.errors import LocktuneError
from locktune.towers.kinds import split_kind

KINDS = {
    "hf": ("image or text", "hf:ID_OR_FOLDER", "any transformers model AutoModel loads: a vision backbone (ViT, DeiT, "
           "BEiT, DINOv2, CLIP/SigLIP vision, ConvNeXt, Swin, ResNet) or a text encoder (BERT, RoBERTa, XLM-R, "
           "DistilBERT, DeBERTa, ELECTRA, T5/mT5 encoder, sentence-transformers folders)"),
    "timm": ("image", "timm:NAME[@FILE_OR_HUB_ID]", "a timm model (pip install 'locktune[timm]')"),
    "open_clip": ("image", "open_clip:ARCH@PRETRAINED", "an open_clip model's image tower "
                  "(pip install 'locktune[open_clip]')"),
}
# Bundled towers that have no pretrained weights: their only letter is u.
FROM_SCRATCH = {"clip": "CLIP-style causal transformer, own BPE vocabulary trained on the captions",
                "t5_encoder": "T5 v1.1-style encoder, own Unigram vocabulary trained on the captions"}


@dataclass
class TowerFacts:
    name: str
    side: str  # image | text
    output_dim: int
    parameters: int
    letters: str  # which of L, U, u it accepts
    pool: str = ""
    preprocess: dict = field(default_factory=dict)
    note: str = ""
    pool_reason: str = ""  # why this pooling (auto's choice, or as given)
    transformers_export: str = ""  # whether this tower, so pooled, exports to transformers' dual encoder
    tokens: str = ""  # image towers: the token outputs a blocks:N head reads ("17 x 384, class token first")


def _side(name: str) -> str:
    from locktune.towers.image import IMAGE_TOWERS
    from locktune.towers.text import TEXT_TOWERS

    kind, spec = split_kind(name)
    if kind is None:
        if name in IMAGE_TOWERS:
            return "image"
        if name in TEXT_TOWERS:
            return "text"
        raise LocktuneError(f"unknown tower '{name}'; valid bundled towers: {', '.join(IMAGE_TOWERS.names())} "
                            f"(image), {', '.join(TEXT_TOWERS.names())} (text), or KIND:NAME with KIND one of "
                            f"{', '.join(k + ':' for k in KINDS)}")
    if kind not in KINDS:
        raise LocktuneError(f"tower '{name}': unknown kind '{kind}:'; valid kinds: {', '.join(k + ':' for k in KINDS)}")
    if kind != "hf":
        return "image"
    from locktune.towers.hf_common import is_vision_config, load_config
    from locktune.towers.hub import require_config, resolve_model
    from locktune.towers.text.hf_text import sentence_transformers_layout

    folder, _ = sentence_transformers_layout(resolve_model(spec, f"tower '{name}'").folder, f"tower '{name}'")
    require_config(folder, f"tower '{name}'")
    config = load_config(folder, f"tower '{name}'", part="vision")
    return "image" if is_vision_config(config) else "text"


def describe_tower(name: str, pool: str = "auto") -> TowerFacts:
    """Build the tower as `u` would (no weights read) and report its shape; letters from whether
    pretrained weights exist."""
    side = _side(name)
    if side == "image":
        from locktune.towers.image import build_image_tower

        tower = build_image_tower(name, pretrained=False, pool=pool)
        weights = split_kind(name)[0] is None or _has_weights(name)
        return TowerFacts(name, "image", int(tower.output_dim), _count(tower), "LUu" if weights else "u",
                          getattr(tower, "pool", "mean"), tower.preprocess(0).describe(),
                          pool_reason=getattr(tower, "pool_reason", ""), transformers_export=tower_export(tower)[1],
                          tokens=_tokens_line(tower))
    if name in FROM_SCRATCH:
        return TowerFacts(name, "text", 0, 0, "u", note=FROM_SCRATCH[name] + "; sized by model.text_width/layers/"
                          "heads/vocab_size (the vocabulary is trained when a run starts)",
                          transformers_export=NOT_HF.format(side="text", name=name))
    from locktune.towers.text import build_text_tower
    from locktune.towers.text.base import TextTowerArgs

    tower = build_text_tower(name, TextTowerArgs(pretrained=False, max_len=16, pool=pool))
    weights = split_kind(name)[0] is None or _has_weights(name)
    return TowerFacts(name, "text", int(tower.output_dim), _count(tower), "LUu" if weights else "u",
                      getattr(tower, "pool", ""), note=f"tokenizer: {type(tower.hf_tokenizer).__name__}, "
                      f"vocabulary {len(tower.hf_tokenizer)}", pool_reason=getattr(tower, "pool_reason", ""),
                      transformers_export=tower_export(tower)[1])


def _tokens_line(tower) -> str:
    """'17 x 32 at 32 px, class token first' (what a blocks:N head reads), or why the tower has none."""
    from locktune.towers.image.base import token_shape

    preprocess = tower.preprocess(0)
    try:
        count, width = token_shape(tower, preprocess)
    except LocktuneError:
        return "none (blocks:N heads need an hf: ViT-family tower, efficientnet_lite0 or mobilenet_v2)"
    first = "class token first" if tower.has_cls_token else "no class token (a blocks:N head learns one)"
    return f"{count} x {width} at {preprocess.image_size} px, {first}"


def _has_weights(name: str) -> bool:
    kind, spec = split_kind(name)
    if kind == "hf":
        from locktune.towers.hub import resolve_model, weight_files
        from locktune.towers.text.hf_text import sentence_transformers_layout

        folder, _ = sentence_transformers_layout(resolve_model(spec, name).folder, name)
        return bool(weight_files(folder))
    return "@" in spec or kind == "timm"


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# transformers' VisionTextDualEncoderModel embeds with each tower's `pooler_output` (export/transformers_dual.py
# refuses anything else): a model exports there only when both towers are Hugging Face models pooled with `pooler`.
NOT_HF = "not exportable to transformers: the {side} tower {name} is not a Hugging Face model (use --format locktune)"


def tower_export(tower) -> tuple[bool, str]:
    """(exports, one phrase saying so and why) for one built tower, image or text."""
    from locktune.towers.image.hf_vision import HFVisionTower
    from locktune.towers.setting import unwrap
    from locktune.towers.text.base import TextTower
    from locktune.towers.text.hf_text import HFTextTower

    tower = unwrap(tower)
    side = "text" if isinstance(tower, TextTower) else "image"
    if not isinstance(tower, (HFVisionTower, HFTextTower)):
        return False, NOT_HF.format(side=side, name=getattr(tower, "name", type(tower).__name__))
    if tower.pool == "pooler":
        return True, f"exportable to transformers: the {side} tower {tower.name} pools with pooler"
    fix = (f"use model.{side}_pool=pooler to export" if tower.has_pooler
           else "it has no trained pooled output: use --format locktune")
    return False, (f"not exportable to transformers: the {side} tower {tower.name} pools with {tower.pool} "
                   f"({tower.pool_reason}); the dual encoder embeds with the pooled output; {fix}")


def model_export_line(image_tower, text_tower) -> str:
    """What `train` prints before the first step: whether this model will export to transformers, and why not."""
    results = [tower_export(image_tower), tower_export(text_tower)]
    if all(ok for ok, _ in results):
        return "transformers export (--format transformers): yes, both towers pool with pooler"
    reasons = [why.removeprefix("not exportable to transformers: ") for ok, why in results if not ok]
    return "transformers export (--format transformers): no; " + "; ".join(reasons)
