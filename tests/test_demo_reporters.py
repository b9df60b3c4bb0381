"""The demo logs to TensorBoard when the package is there, and trains anyway (one line) when it is not."""

from locktune import demo
from locktune.config import load_config


def demo_config():
    return load_config("demo.yaml")


def test_the_demo_keeps_tensorboard_when_installed():
    assert "tensorboard" in demo.without_missing_reporters(demo_config()).train.report_to


def test_the_demo_drops_a_missing_reporter_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(demo, "missing_extra", lambda extra: "tensorboard" if extra == "tensorboard" else None)
    config = demo.without_missing_reporters(demo_config())
    assert config.train.report_to == ["jsonl"]
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["locktune demo: train.report_to=tensorboard skipped: its package is not installed "
                   "(pip install 'locktune[tensorboard]' to get it)"]
