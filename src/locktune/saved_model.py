"""A saved-model folder that anyone can load: no training config, no data packages for the text tower, no network.

Layout (format version 1):

    locktune_model.json   format version, model config, tower setting, preprocessing description, and the
                          loss that trained it (`loss`: global | local | sigmoid; absent in older folders: softmax)
    model.safetensors     every weight of both towers, both heads (linear, mlp, blocks:N: `model/heads.py`; the
                          manifest's model config names them and their options) and the temperature
    tokenizer/            the text tower's tokenizer: `tokenizer.json` for the from-scratch CLIP tower,
                          or a Hugging Face folder (config + tokenizer files + pooling) for a pretrained encoder
    image_tower/          for a tower the user brought (hf:, timm:, open_clip:): its architecture config,
                          image-processor config and pooling (bundled towers rebuild from their name)

Loading builds each tower's architecture *without* its pretrained weights and then fills every weight from
`model.safetensors`, so the result is the trained model exactly, whatever the weight packages hold.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from locktune.config import ModelConfig, config_from_dict
from locktune.errors import LocktuneError
from locktune.loss import DEFAULT_LOSS, LOSS_NAMES
from locktune.towers.image.preprocess import Preprocess

FORMAT_VERSION = 1
MANIFEST = "locktune_model.json"
WEIGHTS = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
IMAGE_TOWER_DIR = "image_tower"


def is_saved_model(path: str | Path) -> bool:
    """True when `path` is a saved-model folder (holds the manifest)."""
    return (Path(path) / MANIFEST).is_file()


def save_pretrained(model, folder: str | Path, state: dict | None = None) -> Path:
    """Write `model` (a TwoTower) as a saved-model folder; returns the folder.  `state`: the whole state dict
    when the model is sharded over processes (FSDP), gathered by the caller."""
    from locktune.towers.setting import unwrap

    folder = Path(folder)
    (folder / TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
    text, image = unwrap(model.text_tower), unwrap(model.image_tower)
    if text.tokenizer_json() is not None:
        (folder / TOKENIZER_DIR / "tokenizer.json").write_text(text.tokenizer_json())
        text_format = "bpe_json"
    elif hasattr(text, "hf_tokenizer"):
        # The HF config describes the architecture; the tokenizer files are the vocabulary.  Weights
        # are not saved here: they live in model.safetensors with everything else.
        text.save_architecture(folder / TOKENIZER_DIR)
        text_format = "hf_folder"
    else:
        raise LocktuneError(f"text tower '{text.name}' has no tokenizer this format knows how to save")
    image.save_architecture(folder / IMAGE_TOWER_DIR)  # towers users bring: config + processor; bundled: nothing
    # safetensors wants contiguous tensors; channels_last convolution weights are not.
    state = {k: v.detach().contiguous().cpu() for k, v in (state if state is not None else model.state_dict()).items()}
    tmp = folder / f".{WEIGHTS}.tmp{os.getpid()}"
    save_file(state, str(tmp), metadata={"format": "pt", "locktune_format_version": str(FORMAT_VERSION)})
    os.chmod(tmp, 0o644)  # safetensors writes the file private; a saved model is meant to be shared
    tmp.replace(folder / WEIGHTS)
    manifest = {
        "format_version": FORMAT_VERSION,
        "library": "locktune",
        "model": asdict(model.config),
        "text_tokenizer": text_format,
        "preprocess": model.preprocess.describe(),
        "embed_dim": model.embed_dim,
        # What the similarities mean (softmax over labels, or a sigmoid each with the learned bias).
        "loss": model.loss,
        # What the embedding cache keys the locked tower by, so a loaded model reuses its training's cache.
        "image_identity": image.cache_identity(),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return folder


def read_manifest(folder: str | Path) -> dict:
    """The folder's manifest, checked for a format version this locktune reads."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise LocktuneError(f"'{folder}' is not a locktune saved model (no {MANIFEST}); "
                            "make one with `locktune export --model RUN_DIR --out FOLDER`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LocktuneError(f"'{path}' is not valid JSON ({error})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise LocktuneError(f"'{folder}' has saved-model format version {version!r}; this locktune "
                            f"({_library_version()}) reads version {FORMAT_VERSION}. Upgrade locktune, or "
                            "re-export the model with the locktune that trained it")
    check_manifest_numbers(manifest, path)
    return manifest


REEXPORT = "fix the value, or export the model again (`locktune export --model RUN_DIR --out FOLDER`)"
SIZED_BY = ("image_size", "embed_dim", "max_text_len", "text_width", "text_layers", "text_heads", "text_vocab_size",
            "clip_width", "clip_layers", "clip_heads", "clip_vocab_size",  # clip_*: the names locktune 0.1.0 wrote
            "head_mlp_depth", "head_mlp_width")


def check_model_numbers(model, where: str) -> None:
    """A saved model config's numbers that size tensors (`SIZED_BY`), each within its limit, and the
    from-scratch text tower they make within the parameter limit."""
    from locktune.towers.limits import check_number, check_parameter_total, refuse

    if not isinstance(model, dict):
        raise refuse(where, "model", type(model).__name__, "not an object of model settings", REEXPORT)
    for field in SIZED_BY:
        if field in model:
            check_number(model[field], where, f"model.{field}", remedy=REEXPORT)
    # A from-scratch text tower is sized by these numbers alone: bound what they make together (12 w^2 a
    # transformer layer, plus the token and position tables) as the meta-device count does for hf: towers.
    def sized(name: str) -> int:  # the new name wins where both are given, as config_from_dict reads them
        return model.get(f"text_{name}", model.get(f"clip_{name}", 0))

    width, layers = sized("width"), sized("layers")
    tables = sized("vocab_size") + model.get("max_text_len", 0)
    check_parameter_total(12 * width * width * layers + tables * width, f"{where} (model.text_*)")


def check_manifest_numbers(manifest: dict, path: Path) -> None:
    """Every number of the manifest that sizes a tensor or a transform, within `towers/limits.py`'s bounds,
    before anything is built from it: one line naming the file, the field, the value and the limit."""
    from locktune.towers.limits import check_config_tree, check_normalisation, check_number, refuse

    where = f"'{path}'"
    check_model_numbers(manifest.get("model"), where)
    if "embed_dim" in manifest:
        check_number(manifest["embed_dim"], where, "embed_dim", remedy=REEXPORT)
    preprocess = manifest.get("preprocess")
    if not isinstance(preprocess, dict):
        raise refuse(where, "preprocess", type(preprocess).__name__, "not an object describing the transform",
                     REEXPORT)
    check_config_tree({"preprocess": {k: v for k, v in preprocess.items() if k in ("image_size", "resize_to")}},
                      where)
    check_normalisation(preprocess.get("mean"), preprocess.get("std"), where, ("preprocess.mean", "preprocess.std"))
    background = preprocess.get("background", [255, 255, 255])
    if not (isinstance(background, list) and len(background) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in background)):
        raise refuse(where, "preprocess.background", background, "not three whole numbers from 0 to 255", REEXPORT)


def load_pretrained(folder: str | Path):
    """Rebuild the TwoTower saved by `save_pretrained`, in eval mode."""
    from locktune.model.two_tower import TwoTower
    from locktune.towers.image import build_image_tower
    from locktune.towers.setting import apply_letter, is_pretrained, parse_setting

    from locktune.safe_files import check_safetensors

    folder = Path(folder)
    manifest = read_manifest(folder)
    # Every tensor's size and place checked against the file before any tower is built or tensor read.
    check_safetensors(folder / WEIGHTS, f"saved model '{folder}'", "copy the folder again, or export the model "
                      "again (`locktune export --model RUN_DIR --out FOLDER`)")
    config = _saved_config(manifest, folder)
    setting = parse_setting(config.setting)
    saved = folder / IMAGE_TOWER_DIR if (folder / IMAGE_TOWER_DIR).is_dir() else None
    image = build_image_tower(config.image_tower, pretrained=False, pool=config.image_pool, saved=saved)
    # The embedding cache keys a tower by its starting weights: a pretrained tower (L/U) must keep its
    # fingerprint so a locked tower reuses the cache entries it already has.
    image.pretrained = is_pretrained(setting.image)
    if "image_identity" in manifest:
        image.saved_identity = manifest["image_identity"]
    state = load_file(str(folder / WEIGHTS))
    text = _build_text_tower(folder, manifest, config, state)
    loss = manifest.get("loss", DEFAULT_LOSS)  # folders written before the field: a softmax loss
    if loss not in LOSS_NAMES:
        raise LocktuneError(f"'{folder / MANIFEST}' names loss {loss!r}, which this locktune does not know "
                            f"({', '.join(LOSS_NAMES)}); upgrade locktune")
    model = TwoTower(config, apply_letter(image, setting.image), apply_letter(text, setting.text), loss=loss)
    # The exact transform the model was trained and cached with, whatever this machine's defaults.
    model.preprocess = Preprocess.from_description(manifest["preprocess"])
    if not any(".encoder.pooler." in k for k in model.state_dict()):
        # Models saved before the text tower dropped its unused BERT pooler hold its (never trained) weights.
        state = {k: v for k, v in state.items() if not k.startswith("text_tower.") or ".encoder.pooler." not in k}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of another shape than the config builds
        raise LocktuneError(f"'{folder / WEIGHTS}' does not match its config (tensor shapes differ: "
                            f"{str(error).splitlines()[-1].strip()[:200]}); export the model again") from None
    if missing or unexpected:
        raise LocktuneError(f"'{folder / WEIGHTS}' does not match its config: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    return model.eval()


def _saved_config(manifest: dict, folder: Path) -> ModelConfig:
    """The folder's model config, checked as a config file is: a head or key this locktune does not know (a folder
    written by a newer one) is one line naming the file."""
    try:
        return config_from_dict({"model": manifest["model"]}).model
    except LocktuneError as error:
        raise LocktuneError(f"'{folder / MANIFEST}': {error}; upgrade locktune, or export the model again with "
                            "this one") from None


def _build_text_tower(folder: Path, manifest: dict, config: ModelConfig, state: dict):
    from locktune.model.two_tower import text_tower_args
    from locktune.towers.kinds import split_kind
    from locktune.towers.text import build_text_tower
    from locktune.towers.text.hf_text import HFTextTower

    kind = manifest.get("text_tokenizer")
    if kind == "bpe_json":
        args = text_tower_args(config, False, tokenizer_json=(folder / TOKENIZER_DIR / "tokenizer.json").read_text())
        return build_text_tower(config.text_tower, args)
    if kind == "hf_folder":
        # Architecture, vocabulary and pooling from the saved folder, not the package or the hub: loads with
        # neither installed nor reachable.
        args = text_tower_args(config, False, saved=folder / TOKENIZER_DIR)
        if split_kind(config.text_tower)[0] is None:
            args.pool = "auto"  # a bundled encoder (minilm): its pooling is its own
        return HFTextTower(split_kind(config.text_tower)[1], args, name=config.text_tower)
    raise LocktuneError(f"'{folder}' has an unknown text tokenizer kind {kind!r}")


def _library_version() -> str:
    from locktune import __version__

    return f"locktune {__version__}"


RUN_MODEL_DIR = "model"  # where training writes its saved-model folder inside the run folder
LEGACY_MODEL = "model.pt"  # what runs wrote before they wrote saved-model folders


def model_folder(path: str | Path) -> Path | None:
    """The saved-model folder `path` names: itself, or a run folder's `model/`; None when neither."""
    path = Path(path)
    for candidate in (path, path / RUN_MODEL_DIR):
        if is_saved_model(candidate):
            return candidate
    return None


def load_any(path: str | Path):
    """A saved-model folder, a run folder (its `model/`), or an old run's model.pt -> TwoTower (eval mode).

    Internal: the training, evaluation and export code's loader.  The public API is `locktune.load`, which
    wraps the same TwoTower in a `LitModel`."""
    path = Path(path)
    folder = model_folder(path)
    if folder is not None:
        return load_pretrained(folder)
    legacy = path / LEGACY_MODEL if path.is_dir() else path
    if legacy.is_file() and legacy.suffix == ".pt":
        return load_legacy(legacy)
    if path.is_dir():
        raise LocktuneError(f"'{path}' holds no trained model: neither a saved-model folder ({MANIFEST}) nor a run "
                            f"folder with {RUN_MODEL_DIR}/ (a run writes it when its last step is done; "
                            "`locktune train ... --resume` finishes a stopped run)")
    raise LocktuneError(f"no model at '{path}'; give a run folder, a saved-model folder, or an old run's model.pt")


def load_legacy(path: Path):
    """The one converter for model.pt files of older locktune runs.  Read with torch's restricted unpickler
    (`weights_only=True`: tensors, numbers, strings and containers only), so a file someone hands you cannot
    run code; anything else in it is refused.  `locktune export --model OLD_RUN --out FOLDER` writes it anew."""
    from locktune.model import build_model

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise LocktuneError(f"'{path}' is not a model file locktune reads safely ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:160]}); only tensors, numbers and strings are accepted, "
                            "never pickled code") from None
    if not isinstance(saved, dict) or saved.get("format") != 1 or "state_dict" not in saved:
        raise LocktuneError(f"'{path}' is not a locktune model file (format {saved.get('format') if isinstance(saved, dict) else None!r})")
    run_config = saved.get("config")
    check_model_numbers(run_config.get("model") if isinstance(run_config, dict) else None, f"'{path}' config")
    config = config_from_dict({"model": saved["config"]["model"]})
    model = build_model(config.model, tokenizer_json=saved.get("tokenizer_json"))
    # Models saved before MiniLM's unused pooler was dropped carry its (never trained) weights.
    state = {k: v for k, v in saved["state_dict"].items() if ".encoder.pooler." not in k}
    model.load_state_dict(state)
    return model.eval()


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """True when two models hold the same weights bit for bit (used by tests and `export --check`)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def weights_fingerprint(net: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of every tensor in the state dict, by name, dtype, shape and bytes: the same for
    a run folder and its export, different for any other weights.  Indexes record it (`serve` checks it)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        digest.update(f"{name}|{value.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]
