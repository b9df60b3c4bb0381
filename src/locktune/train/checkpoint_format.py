"""The training checkpoint's file format: safetensors for the tensors, JSON for everything else; no pickle.

A checkpoint is a tree of dicts, lists and tuples whose leaves are tensors, numpy arrays and plain values
(the model and optimizer state, the schedule, the step, the losses, every rank's RNG states, the config).
`encode` splits it into named tensors and one JSON text in which each tensor is a `{"__tensor__": name}`
placeholder; the JSON travels in the safetensors header's metadata.  Reading builds only dicts, lists,
tuples, tensors, numpy arrays and JSON values, so a crafted file can fail to load but never runs code
(pickle, which `torch.load` would use, runs whatever a file names).

Exact round trips: tensors keep their dtype and bits; numpy arrays are stored as their raw bytes with dtype
and shape (numpy's MT19937 key is uint32, which not every torch version can hold); Python floats are
written by `repr` (exact in JSON, NaN and infinities included); tuples stay tuples (`random.setstate` and
`np.random.set_state` want them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "locktune-training-checkpoint"
VERSION = 1
_TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__items__")


class FormatError(ValueError):
    """The file is not a checkpoint this version reads (damaged, truncated, or another format)."""


def encode(tree: Any) -> tuple[dict[str, torch.Tensor], str]:
    """A checkpoint tree -> (named CPU tensors, JSON text with placeholders)."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def tensor(name: str, value: torch.Tensor) -> str:
        value = value.detach().cpu().contiguous()
        storage = value.untyped_storage()
        if value.numel() and (storage.data_ptr() in storages or storage.nbytes() != value.nbytes):
            value = value.clone()  # safetensors refuses tensors that share memory (tied weights, views)
            storage = value.untyped_storage()
        if value.numel():
            storages.add(storage.data_ptr())
        key = f"{len(tensors):06d}:{name}"
        tensors[key] = value
        return key

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            return {"__tensor__": tensor(path, value)}
        if isinstance(value, np.ndarray):
            raw = torch.from_numpy(np.ascontiguousarray(value).view(np.uint8).reshape(-1).copy())
            return {"__ndarray__": tensor(path, raw), "dtype": value.dtype.str, "shape": list(value.shape)}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and not (len(value) == 1 and next(iter(value)) in _TAGS):
                return {k: walk(v, f"{path}/{k}") for k, v in value.items()}
            return {"__items__": [[walk(k, f"{path}/key{i}"), walk(v, f"{path}/{k}")]
                                  for i, (k, v) in enumerate(value.items())]}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"a checkpoint cannot hold {type(value).__name__} at '{path}'")

    text = json.dumps(walk(tree, ""), separators=(",", ":"))
    return tensors, text


def decode(tensors: dict[str, torch.Tensor], text: str) -> Any:
    """`encode`'s output -> the tree it was given."""

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__ndarray__" in value:
            dtype = np.dtype(value["dtype"])
            if dtype.hasobject:  # only plain numbers: an object array would be pickled Python objects
                raise FormatError("an array of Python objects")
            raw = tensors[value["__ndarray__"]].numpy().tobytes()
            return np.frombuffer(raw, dtype=dtype).reshape(value["shape"]).copy()
        if "__tuple__" in value:
            return tuple(walk(v) for v in value["__tuple__"])
        if "__items__" in value:
            return {_hashable(walk(k)): walk(v) for k, v in value["__items__"]}
        return {k: walk(v) for k, v in value.items()}

    return walk(json.loads(text))


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)) or isinstance(key, torch.Tensor) or isinstance(key, np.ndarray):
        raise FormatError("a dictionary key is not a plain value")
    return key


def to_bytes(tree: Any) -> bytes:
    """The whole file's bytes (the caller writes them, so that a full disk is an ordinary OSError)."""
    from safetensors.torch import save

    tensors, text = encode(tree)
    return save(tensors, metadata={"format": FORMAT, "version": str(VERSION), "state": text})


def read(path: Path) -> Any:
    """A checkpoint file -> its tree; `FormatError` (never anything run from the file) if it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise FormatError("it holds no locktune training state")
            if metadata.get("version") != str(VERSION):
                raise FormatError(f"it is format version {metadata.get('version')!r}; this locktune reads "
                                  f"version {VERSION}")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        return decode(tensors, metadata["state"])
    except FormatError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors, JSON and shape errors alike mean a damaged file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FormatError(f"it is damaged or not a checkpoint ({type(error).__name__}: {first[:200]})") from None
