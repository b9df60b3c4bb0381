"""Where tensors live, in one place: the device, the precision policy, the process-group backend, RNG state.

Every stage asks here (embed, train, eval, demo, index, serve, `locktune.load(device=)`, export): none decides
a device from `torch.cuda.is_available()` on its own.  The device word is the same everywhere (`train.device`
in a config, `--device` on the command line, `device=` in the API):
- `auto`: CUDA when it is visible (under torchrun, the process's LOCAL_RANK device), else the CPU;
- `cpu`, `cuda`, `cuda:1`, or any torch device string (`xpu`, `mps`, ...);
- `fakegpu`: the CPU-backed second device kind of `runtime/fake_device.py` that the tests run on.

Precision: `fp32` runs everything in float32; `bf16` runs the towers under bfloat16 autocast on the device,
and the loss always in float32 outside autocast (`full_precision`).
Backend: from the device actually used (NCCL for CUDA, gloo for the CPU, `fakeccl` for fakegpu), never from
what the host happens to have.
RNG state: a checkpoint keeps the CPU's, the device's (when it has its own generator), numpy's and Python's,
for every process (`rng_state` / `restore_rng`).
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from locktune.errors import LocktuneError

FAKE = "fakegpu"
PRECISIONS = ("fp32", "bf16")
# fakegpu names its device: its group then carries object collectives (all_gather_object) on device tensors, as
# NCCL does, instead of guessing the CPU.
BACKENDS = {"cuda": "nccl", "cpu": "gloo", "xpu": "xccl", "hpu": "hccl", FAKE: f"{FAKE}:fakeccl"}


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def check_device_word(name: str, key: str = "device") -> None:
    """Refuse a device word that names no device kind, before any work (what exists is `resolve_device`'s)."""
    word = str(name).strip()
    if word == "auto" or word.split(":")[0] == FAKE:
        return
    try:
        torch.device(word)
    except (RuntimeError, ValueError):
        raise LocktuneError(f"{key} '{name}' is not a device: use auto, cpu, cuda, cuda:N or another torch device "
                            "string") from None


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device a device word names; under torchrun an accelerator without an index is the process's
    LOCAL_RANK one.  A device that is not there is one line saying what to use instead."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.split(":")[0] == FAKE:
        from locktune.runtime import fake_device

        fake_device.register()
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise LocktuneError(f"device '{name}' is not a torch device ({str(error).splitlines()[0]}); use auto, cpu, "
                            "cuda, cuda:N or another torch device string") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LocktuneError(f"device '{name}' asks for CUDA, but no CUDA device is visible; use device=cpu")
    if device.type == FAKE:
        device = torch.device(FAKE, 0)  # one per process, under torchrun too (`fake_device.DEVICE_COUNT`)
    elif device.type != "cpu" and device.index is None and _under_torchrun():
        device = torch.device(device.type, _local_rank())
    module = device_module(device)
    if module is not None and device.index is not None and device.index >= module.device_count():
        raise LocktuneError(f"device '{device}' does not exist: {module.device_count()} {device.type} device(s) "
                            "are visible")
    return device


def device_module(device: torch.device):
    """torch.cuda, torch.xpu, torch.fakegpu...: the module of a device with its own generator, or None (CPU)."""
    if device.type in ("cpu", "meta"):
        return None
    return getattr(torch, device.type, None)


def use(device: torch.device) -> None:
    """Make `device` the current device of its kind (what NCCL and `torch.cuda.current_device()` use)."""
    module = device_module(device)
    if module is not None and device.index is not None and hasattr(module, "set_device"):
        module.set_device(device.index)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters are on (the CPU for a model without parameters)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------------ precision
def tower_autocast(device: torch.device, precision: str):
    """The context the towers run in: bfloat16 autocast on `device` for `bf16`, nothing for `fp32`."""
    if precision not in PRECISIONS:
        raise LocktuneError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def full_precision(device: torch.device | str):
    """Leave autocast (for the loss: always float32, whatever the towers ran in)."""
    kind = device.type if isinstance(device, torch.device) else str(device)
    return torch.autocast(device_type=kind, enabled=False)


def pin_memory(device: torch.device) -> bool:
    """Pinned host memory for the loader: only where copies to the device are asynchronous (CUDA)."""
    return device.type == "cuda"


# ------------------------------------------------------------------------------------------------ process groups
def backend_for(device: torch.device) -> str:
    """The torch.distributed backend for collectives on `device`'s tensors."""
    if device.type not in BACKENDS:
        raise LocktuneError(f"no torch.distributed backend is known for device '{device}'; use device=cpu (gloo) "
                            "or cuda (NCCL)")
    return BACKENDS[device.type]


# ----------------------------------------------------------------------------------------------------- RNG state
def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random streams: the CPU's, `device`'s own (if it has one), numpy's and Python's.  Tensors
    are CPU tensors and arrays, so the state saves and loads anywhere."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "device_type": device.type, "device": None}
    module = device_module(device)
    if module is not None and hasattr(module, "get_rng_state"):
        state["device"] = module.get_rng_state(device.index if device.index is not None else None).cpu()
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Put back what `rng_state` took.  The device's stream is restored when the state was taken on a device
    of the same kind; a checkpoint written on another kind (a CPU run resumed on a GPU) cannot restore it,
    and that is said once on stderr."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    module = device_module(device)
    if module is None or not hasattr(module, "set_rng_state"):
        return
    if state.get("device") is not None and state.get("device_type") == device.type:
        module.set_rng_state(state["device"], device.index if device.index is not None else None)
    else:
        import sys

        print(f"locktune: the checkpoint holds no {device.type} random state (written on "
              f"{state.get('device_type', 'cpu')}); dropout on {device} will not repeat the original run's",
              file=sys.stderr)
