"""Bad input at this stage: one-line errors that list the valid choices or say what to install."""

import pytest

from locktune.cli import main
from locktune.config import load_config
from locktune.errors import LocktuneError, MissingDataPackage


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv, expected", [
    (["train", "model.setting=LX"], "unknown tower setting 'LX'; valid: LU, Lu, LL, UU, Uu, UL, uU, uu, uL"),
    (["train", "model.image_tower=resnet9"], "unknown image tower 'resnet9'; valid: efficientnet_lite0, mobilenet_v2"),
    (["train", "model.text_tower=gpt"], "unknown text tower 'gpt'; valid: clip, minilm"),
    (["train", "data.sources=[flickr]"], "unknown pair source 'flickr'; valid: emoji, openclipart"),
    (["eval", "nowhere", "--benchmark", "imagenet"], "unknown benchmark 'imagenet'; valid: animal_mnist, fashion_mnist"),
    (["eval", "nowhere"], "no model at"),
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

    with pytest.raises(LocktuneError, match="unknown benchmark 'imagenet'; valid: animal_mnist, fashion_mnist"):
        get_benchmark("imagenet")


def test_missing_debian_package_says_what_to_install():
    from locktune.data.packages import debian_path

    with pytest.raises(MissingDataPackage, match="apt-get install --no-install-recommends tuxpaint-stamps-default"):
        debian_path("/nonexistent/stamps", "tuxpaint-stamps-default", "Tux Paint benchmarks")


def test_missing_npm_package_says_what_to_install(monkeypatch, tmp_path):
    from locktune.data import packages
    from locktune.data.sources.emoji import emoji_pairs

    monkeypatch.setenv("LOCKTUNE_NPM_PREFIX", str(tmp_path))
    monkeypatch.setattr(packages, "_REPO_ROOT", tmp_path)
    with pytest.raises(MissingDataPackage, match=r"npm install --prefix .deps/npm emoji-datasource-google@16.0.0"):
        emoji_pairs()


def test_overrides_apply_in_order_and_coerce_types():
    config = load_config(None, ["train.warmup_steps=5", "train.steps=10", "train.lr=1e-3", "train.steps=20", "data.sources=emoji,openclipart"])
    assert config.train.steps == 20 and config.train.lr == 1e-3
    assert config.data.sources == ["emoji", "openclipart"]
