"""What every `locktune` command shares: one parser class (errors: one line on stderr, exit 2), the
`--config FILE key.sub=value ...` arguments, the `--model` argument, and help that ends with examples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MODEL_HELP = "the model: a run folder (runs/demo), or a saved-model folder from `locktune export`"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `locktune CMD: error: WHAT (see locktune CMD --help)`, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message.splitlines()[0]} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def examples(*lines: str, extra: str = "") -> str:
    """An epilog: a block of example commands (and any lists of valid names) for `--help`."""
    text = "examples:\n" + "\n".join(f"  {line}" for line in lines)
    return text + (f"\n\n{extra}" if extra else "")


def config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--config", default=default, metavar="FILE",
                        help="YAML config file, a path or a shipped name such as demo.yaml (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. train.steps=100 model.setting=Lu eval.benchmarks=[mnist]")
    device_arg(parser)


DEVICE_HELP = ("where it runs: auto (CUDA when visible, else the CPU), cpu, cuda, cuda:N, any torch device string; "
               "the same word as train.device in a config (default: the config's, auto)")


def device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, metavar="DEVICE", help=DEVICE_HELP)


def model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH", help=MODEL_HELP)


def load_run_config(args):
    """The command's config: defaults, then --config, then each key=value.  A bare path among the overrides
    is most likely a model given the old way: say how to give it."""
    from locktune.config import load_config
    from locktune.errors import LocktuneError

    for text in args.overrides:
        if "=" not in text and Path(text).exists():
            raise LocktuneError(f"'{text}' is not a key=value override; give a model as --model {text}")
    overrides = list(args.overrides)
    if getattr(args, "device", None):
        overrides.append(f"train.device={args.device}")  # --device is train.device, for every command
    return load_config(args.config, overrides)


def valid_names() -> str:
    """The names help lists: settings, benchmarks, suites, bundled towers."""
    from locktune.eval.benchmarks import BENCHMARKS
    from locktune.eval.suites import SUITES
    from locktune.towers.image import IMAGE_TOWERS
    from locktune.towers.setting import VALID_SETTINGS
    from locktune.towers.text import TEXT_TOWERS

    return (f"settings (model.setting): {', '.join(VALID_SETTINGS)}\n"
            f"image towers (model.image_tower): {', '.join(IMAGE_TOWERS.names())}, hf:FOLDER_OR_ID, timm:NAME, "
            "open_clip:ARCH@PRETRAINED\n"
            f"text towers (model.text_tower): {', '.join(TEXT_TOWERS.names())}, hf:FOLDER_OR_ID\n"
            f"suites (eval.suite): {', '.join(SUITES.names())}\n"
            f"benchmarks (eval.benchmarks): {', '.join(BENCHMARKS.names())}, or KIND:PATH for a local copy")
