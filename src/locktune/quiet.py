"""Only locktune's own messages on the command line: third-party warnings and log lines that are noise for
a locktune user (they describe the libraries' internals, not anything the user can act on) are filtered.
Applied by the CLI only; a program that imports locktune keeps its own warning and logging settings."""

from __future__ import annotations

import logging
import warnings

# (message regex, category, module regex): each one seen in locktune runs and not actionable by its user.
NOISY_WARNINGS = (
    ("Palette images with Transparency expressed in bytes", UserWarning, "PIL"),  # once per icon; we composite
    (".*", UserWarning, "torchvision"),  # "Failed to load image Python extension" beside a CPU torch
    (".*TracerWarning.*|Converting a tensor to a Python", Warning, "torch"),  # ONNX tracing of shape checks
    (".*`resume_download` is deprecated.*", FutureWarning, "huggingface_hub"),
)
NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "transformers", "huggingface_hub",
                 "datasets", "httpx")


def quiet_third_party() -> None:
    for message, category, module in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
    except ImportError:
        pass
