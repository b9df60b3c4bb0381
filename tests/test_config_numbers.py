"""Config values a run cannot use are one line at load, before any data or model; the temperature stays
clamped in parameter space so it can always come back down."""

from __future__ import annotations

import math

import pytest
import torch

from locktune.config import load_config
from locktune.errors import LocktuneError


@pytest.mark.parametrize("override,message", [
    ("train.lr=.nan", "train.lr' must be a finite number > 0"),
    ("train.lr=.inf", "train.lr' must be a finite number > 0"),
    ("train.lr=-1e-4", "train.lr' must be a finite number > 0"),
    ("train.lr=0", "train.lr' must be a finite number > 0"),
    ("train.weight_decay=-0.1", "train.weight_decay' must be a finite number >= 0"),
    ("train.grad_clip=nan", "train.grad_clip' must be a finite number > 0"),
    ("train.head_lr_multiplier=0", "train.head_lr_multiplier' must be a finite number > 0"),
    ("model.logit_scale_init=200", "logit_scale_init .* is above model.logit_scale_max"),
    ("train.steps=[", "override 'train.steps=\\[' is not valid YAML"),
    ("train.loss=siglip", "train.loss 'siglip' is not one of global, local, sigmoid"),
    ("model.logit_bias_init=-150", "model.logit_bias_init' must be a finite number within \\+-model.logit_scale_max"),
    ("model.logit_bias_init=.nan", "model.logit_bias_init' must be a finite number within"),
])
def test_bad_numbers_and_yaml_are_one_line(override, message):
    with pytest.raises(LocktuneError, match=message):
        load_config(None, [override])


def test_a_yaml_syntax_error_in_a_config_file_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  setting: LU\ntrain: {steps: 3\n")
    with pytest.raises(LocktuneError, match=r"bad.yaml' is not valid YAML at line \d+, column \d+"):
        load_config(path)


def test_cli_reports_a_yaml_error_without_a_traceback(tmp_path, capsys):
    from locktune.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  steps: [1, 2\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_overshot_temperature_comes_back_once_clamped_in_parameter_space():
    """The reproduction: the log-scale overshoots log(100); the loss then pushes the scale down.  Clamped in
    the forward pass only, its gradient is zero and it stays; clamped after each step it recovers."""
    from locktune.loss.contrastive import contrastive_loss
    from test_api import tiny_net

    torch.manual_seed(0)
    # Embeddings whose best temperature is well below the cap: noisy pairs want a small logit scale.
    image = torch.nn.functional.normalize(torch.randn(32, 8), dim=-1)
    text = torch.nn.functional.normalize(image + 2.0 * torch.randn(32, 8), dim=-1)

    def run(clamp_in_parameter_space: bool) -> float:
        net = tiny_net()
        with torch.no_grad():
            net.log_logit_scale.fill_(4.76)  # past log(100) = 4.605
        optimizer = torch.optim.AdamW([net.log_logit_scale], lr=0.05, weight_decay=0.0)
        for _ in range(100):
            optimizer.zero_grad()
            contrastive_loss(image, text, net.scale).backward()
            optimizer.step()
            if clamp_in_parameter_space:
                net.clamp_logit_scale()
        return float(net.scale.detach())

    assert run(False) == pytest.approx(100.0)  # stuck at the cap for good
    assert run(True) < 50.0  # came back down to what the data asks for


def test_the_trainer_keeps_the_parameter_at_or_below_the_cap(tmp_path, emoji_pairs, monkeypatch):
    import locktune.train.trainer as trainer
    from tiny_configs import tiny_run

    built = trainer.build_model

    def overshot(*args, **kwargs):  # as if an earlier step had pushed the parameter past the cap
        model = built(*args, **kwargs)
        with torch.no_grad():
            model.log_logit_scale.fill_(math.log(20.0))
        return model

    monkeypatch.setattr(trainer, "build_model", overshot)
    config = tiny_run(tmp_path / "run", steps=2)
    config.model.logit_scale_init = config.model.logit_scale_max = 12.0
    model = trainer.train(config, pairs=emoji_pairs).model
    assert float(model.log_logit_scale.detach()) <= math.log(12.0) + 1e-7


def test_sigmoid_loss_config_and_its_bias_clamped_in_parameter_space(tmp_path, emoji_pairs, monkeypatch):
    """train.loss=sigmoid loads with the paper's defaults (t = 10, b = -10); a bias pushed past
    +-logit_scale_max comes back within it after the step, as the temperature does."""
    import locktune.train.trainer as trainer
    from tiny_configs import tiny_run

    config = load_config(None, ["train.loss=sigmoid"])
    assert config.train.loss == "sigmoid" and config.model.logit_scale_init == 10.0
    assert config.model.logit_bias_init == -10.0
    built = trainer.build_model

    def overshot(*args, **kwargs):
        model = built(*args, **kwargs)
        with torch.no_grad():
            model.logit_bias.fill_(-40.0)
        return model

    monkeypatch.setattr(trainer, "build_model", overshot)
    run = tiny_run(tmp_path / "run", steps=2, train={"loss": "sigmoid"})
    run.model.logit_scale_init = run.model.logit_scale_max = 12.0
    model = trainer.train(run, pairs=emoji_pairs).model
    assert -12.0 <= float(model.logit_bias.detach()) <= -12.0 + 2 * 1e-4 * 1.01  # clamped, then two AdamW steps at most
    import json

    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert "logit_bias" in log[-1]
