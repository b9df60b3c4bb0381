"""What the Hugging Face image and text towers share: quiet transformers, read a config, pick its class."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from locktune.errors import LocktuneError

# T5-family checkpoints: only the encoder is a text tower (AutoModel would build the decoder too).
ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


def hf_quiet() -> None:
    """Only locktune's own messages: transformers' load reports and progress bars are noise here."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def plain_mode_switch(module: torch.nn.Module) -> torch.nn.Module:
    """train()/eval() as torch's own for every transformers model inside `module`.  transformers 5 re-kernelizes a
    model on each mode switch (hub kernels: a download where the hub is reachable, kernels other than the
    model's own code, and a fixed list of device kinds that refuses any other).  A tower runs its own PyTorch
    code, the same on every device; returns `module`."""
    from transformers import PreTrainedModel

    for sub in module.modules():
        if isinstance(sub, PreTrainedModel):
            sub.train = torch.nn.Module.train.__get__(sub)  # instance attribute: shadows the override
    return module


def load_config(folder: Path, what: str, part: str):
    """The folder's transformers config; for a two-tower checkpoint (CLIP, SigLIP) its `part` half
    ('vision' or 'text')."""
    from locktune.towers.hub import read_json
    from locktune.towers.limits import check_config_tree

    # The file's own numbers, before transformers builds a config (or anything is sized) from them.
    check_config_tree(read_json(folder / "config.json", what), f"{what}: '{folder / 'config.json'}'")
    hf_quiet()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as error:
        raise LocktuneError(f"{what}: '{folder}/config.json' is not a config this transformers "
                            f"reads ({str(error).splitlines()[0][:200]}); upgrade transformers or check the folder")
    sub = getattr(config, f"{part}_config", None)
    return sub if sub is not None else config


def model_class(config, what: str, want: str):
    """The transformers class for `config`, checked to be an image (`want='image'`) or text model."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    name = ENCODER_ONLY.get(config.model_type) if want == "text" else None
    try:
        cls = getattr(transformers, name) if name else MODEL_MAPPING[type(config)]
    except KeyError:
        raise LocktuneError(f"{what}: transformers has no model class for model_type '{config.model_type}'; "
                            "upgrade transformers, or use another kind of tower") from None
    takes = getattr(cls, "main_input_name", "input_ids")
    if want == "image" and takes != "pixel_values":
        raise LocktuneError(f"{what} is a text model ({config.model_type}, takes {takes}), not an image model; "
                            "name it as model.text_tower, and give model.image_tower an image model")
    if want == "text" and takes != "input_ids":
        raise LocktuneError(f"{what} is not a text model ({config.model_type}, takes {takes}); name it as "
                            "model.image_tower, and give model.text_tower a text encoder")
    return cls


def is_vision_config(config) -> bool:
    """True when the model this config builds takes pixels (an image tower), False for token ids."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    if config.model_type in ENCODER_ONLY:
        return False
    cls = MODEL_MAPPING[type(config)] if type(config) in MODEL_MAPPING else None
    return getattr(cls, "main_input_name", "input_ids") == "pixel_values"


@contextmanager
def probing(module: torch.nn.Module) -> Iterator[None]:
    """A trial forward at build time that leaves no trace: eval mode (no dropout) and the random generators
    restored, so building a tower never shifts the seeds a run's other initialisations draw from."""
    was = module.training
    module.eval()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            module.train(was)


def freeze_unused(module: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> list[str]:
    """Parameters the tower's forward never uses (DINOv2's mask token, a dropped head) get no gradient, so
    AdamW would hold no state for them and a resumed run's strict optimizer load would refuse them: turn
    their gradients off.  Returns their names."""
    with probing(module), torch.enable_grad():
        module.zero_grad(set_to_none=True)
        out = forward()
        if not out.requires_grad:  # nothing trainable
            return []
        out.float().sum().backward()
    unused = [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in module.named_parameters():
        p.grad = None
        if name in unused:
            p.requires_grad_(False)
    return unused


def build_random(cls, config, what: str, folder: Path) -> torch.nn.Module:
    """`cls(config)` with random weights, after its size is counted on the meta device (`limits.py`)."""
    from locktune.towers.limits import check_parameter_count

    check_parameter_count(lambda: cls(config), f"{what}: '{folder / 'config.json'}'")
    return cls(config)


def from_pretrained(cls, folder: Path, config, what: str):
    """(model, loading info) from the folder's weights, its safetensors headers checked first, its size
    counted first, and any failure (a pickle file holding more than tensors included) as one line."""
    import pickle
    import zipfile

    from locktune.towers.hub import check_weight_files
    from locktune.towers.limits import check_parameter_count

    check_weight_files(folder, what)
    check_parameter_count(lambda: cls(config), f"{what}: '{folder / 'config.json'}'")
    try:
        return cls.from_pretrained(folder, config=config, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise load_error(what, folder, error) from None


def load_error(what: str, folder: Path, error: Exception) -> LocktuneError:
    """from_pretrained's failure as one line saying what is wrong with the folder."""
    import pickle

    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "Weights only load failed" in text:
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt")]
        return LocktuneError(f"{what}: the pickle weights in '{folder}' ({', '.join(pickles) or 'a .bin file'}) hold "
                             "more than tensors, so locktune does not load them (a pickle can run code); convert "
                             "them to safetensors where you trust the file (AutoModel.from_pretrained(FOLDER)"
                             ".save_pretrained(FOLDER) writes model.safetensors), or download the model's "
                             "safetensors weights")
    if "mismatched" in text or "size mismatch" in text:
        return LocktuneError(f"{what}: the weights in '{folder}' do not fit its config.json (tensor shapes differ): "
                             "another architecture's checkpoint, or a config edited after saving")
    return LocktuneError(f"{what}: cannot load weights from '{folder}' ({type(error).__name__}: "
                         f"{text.splitlines()[0][:200] if text else 'no message'})")
