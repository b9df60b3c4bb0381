"""train.report_to: the TensorBoard event files hold every series train_log.jsonl and eval_log.jsonl hold, with the
same values at the same steps (read back with TensorBoard's own reader), a resumed run has no step twice, wandb
runs offline into the run folder, and names and packages fail as one line before training."""

import json
import re
import struct
import sys
import types

import pytest

from locktune.config import load_config
from locktune.errors import LocktuneError

TINY = ["model.setting=Lu", "model.text_tower=clip", "model.image_tower=mobilenet_v2", "model.image_size=64",
        "model.text_width=32", "model.text_layers=1", "model.text_heads=2", "model.text_vocab_size=400",
        "train.steps=4", "train.batch_size=16", "train.warmup_steps=1", "train.log_every=1",
        "data.image_workers=0", "data.sources=[emoji]", "data.max_pairs_per_source=96"]


def demo_like(run_dir, *more):
    """demo.yaml (its report_to: jsonl and tensorboard) shrunk to the tests' tiny towers."""
    return load_config("demo.yaml", overrides=[*TINY, f"run_dir={run_dir}", *more])


def read_jsonl(path):
    """{series: {step: value}} of a JSONL log; a step written twice (a resumed run) keeps its later line."""
    series = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        for key, value in entry.items():
            if key != "step":
                series.setdefault(key, {})[entry["step"]] = value
    return series


def read_events(folder):
    """{tag: {step: value}} as TensorBoard shows it (orphaned steps of a resumed run purged)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    events.Reload()
    out = {}
    for tag in events.Tags()["scalars"]:
        points = [(e.step, e.value) for e in events.Scalars(tag)]
        assert len({step for step, _ in points}) == len(points), f"{tag}: a step twice"
        out[tag] = dict(points)
    return out


def as_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]  # TensorBoard stores scalars as float32


def expected_tags(run):
    """The TensorBoard series the JSONL logs call for, named as the docs say (train/KEY; TASK/METRIC with '@'
    as '_'), written out here rather than taken from the sink."""
    expected = {f"train/{key}": points for key, points in read_jsonl(run / "train_log.jsonl").items()}
    if (run / "eval_log.jsonl").is_file():
        expected.update({re.sub(r"[^-/\w.]", "_", key): points
                         for key, points in read_jsonl(run / "eval_log.jsonl").items()})
    return expected


def test_demo_config_reports_to_jsonl_and_tensorboard():
    assert load_config("demo.yaml").train.report_to == ["jsonl", "tensorboard"]


def test_event_file_of_a_demo_like_run_holds_every_logged_series(tmp_path, emoji_pairs):
    """Every series of both JSONL logs, at the same steps with the same values: loss, lr and the head's own lr
    (demo.yaml's head_lr_multiplier), grad norm, temperature, the sigmoid loss's bias, pairs/s, and the
    validation metrics of each evaluation."""
    from locktune.train.trainer import train

    run = tmp_path / "run"
    train(demo_like(run, "train.loss=sigmoid", "train.eval_every=2", "data.validation_fraction=0.25"),
          pairs=emoji_pairs)
    expected = expected_tags(run)
    assert {"train/loss", "train/lr", "train/head_lr", "train/grad_norm", "train/scale", "train/logit_bias",
            "train/pairs_per_s", "validation/image_to_text_R_1", "validation/loss"} <= set(expected)
    events = read_events(run / "tensorboard")
    assert set(events) == set(expected)
    for tag, points in expected.items():
        assert events[tag] == {step: as_float32(value) for step, value in points.items()}, tag
    assert sorted(expected["train/loss"]) == [1, 2, 3, 4]
    assert sorted(expected["validation/loss"]) == [0, 2, 4]


def test_resumed_run_appends_and_tensorboard_has_no_step_twice(tmp_path, emoji_pairs):
    """Stopped at step 3 with its last checkpoint at step 2 (as a kill leaves it), then resumed: TensorBoard holds
    steps 1-6 once each, with the uninterrupted run's losses."""
    from locktune.train.trainer import train

    more = ("train.steps=6", "train.checkpoint_every=2", "train.eval_every=1", "data.validation_fraction=0.25")
    train(demo_like(tmp_path / "whole", *more), pairs=emoji_pairs)
    run = tmp_path / "split"
    train(demo_like(run, *more), pairs=emoji_pairs, stop_after=3)
    (run / "checkpoints" / "step_00000003.safetensors").unlink()  # steps 3 is logged, not checkpointed
    train(demo_like(run, *more), pairs=emoji_pairs, resume=True)
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 3, 4, 5, 6], "the JSONL log appends (step 3 twice: before and after the resume)"
    events = read_events(run / "tensorboard")
    whole = read_jsonl(tmp_path / "whole" / "train_log.jsonl")
    assert sorted(events["train/loss"]) == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "scale"):
        assert events[f"train/{key}"] == {s: as_float32(v) for s, v in whole[key].items()}, key
    assert sorted(events["validation/loss"]) == [0, 1, 2, 3, 4, 5, 6]
    for tag, points in expected_tags(run).items():  # every series still matches the log's latest lines
        if tag != "train/pairs_per_s":
            assert events[tag] == {step: as_float32(value) for step, value in points.items()}, tag


def test_unknown_sink_is_one_line_listing_the_choices():
    with pytest.raises(LocktuneError, match=r"train.report_to 'tensorbord' is not one of jsonl, tensorboard, wandb$"):
        load_config(overrides=["train.report_to=[jsonl,tensorbord]"])


def test_missing_package_names_the_extra_before_any_data(tmp_path, monkeypatch):
    import importlib.util

    from locktune.train.trainer import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = demo_like(tmp_path / "run", "train.report_to=[jsonl,wandb]", "data.sources=[no_such_source]")
    with pytest.raises(LocktuneError, match=r"train.report_to=wandb needs the optional package 'wandb': "
                                            r"pip install 'locktune\[wandb\]'"):
        train(config)
    assert not (tmp_path / "run").exists(), "checked before the run folder or the data"


class FakeWandb(types.ModuleType):
    """What the wandb sink asks of wandb: init, log, finish (no wandb process, no network)."""

    def __init__(self):
        import importlib.machinery

        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # found by the package check
        self.calls = []

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        return self

    def log(self, values, step):
        self.calls.append(("log", step, values))

    def finish(self):
        self.calls.append(("finish",))


def test_wandb_gets_offline_mode_the_run_folder_config_and_every_value(tmp_path, emoji_pairs, monkeypatch):
    from locktune.train.trainer import train

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"
    config = demo_like(run, "train.report_to=[jsonl,wandb]", "train.eval_every=2", "data.validation_fraction=0.25")
    train(config, pairs=emoji_pairs, stop_after=2)
    init = fake.calls[0][1]
    assert init["mode"] == "offline" and init["dir"] == str(run) and init["config"] == config.to_dict()
    run_id = (run / "wandb" / "locktune_run_id").read_text().strip()
    assert init["id"] == run_id and re.fullmatch(r"[0-9a-f]{8}", run_id)
    logged = {}
    for call in fake.calls[1:-1]:
        for name, value in call[2].items():
            logged.setdefault(name, {})[call[1]] = value
    expected = {f"train/{k}": v for k, v in read_jsonl(run / "train_log.jsonl").items()}
    expected.update(read_jsonl(run / "eval_log.jsonl"))
    assert logged == expected
    assert fake.calls[-1] == ("finish",)
    train(config, pairs=emoji_pairs, resume=True)
    assert [c for c in fake.calls if c[0] == "init"][1][1]["id"] == run_id, "a resumed run continues its wandb run"


@pytest.mark.slow  # starts wandb's own service process (~5 s alone, much more on a loaded machine)
def test_wandb_offline_run_is_written_into_the_run_folder(tmp_path, emoji_pairs, monkeypatch):
    """The real wandb, offline (no account, no network): its run file in RUN/wandb names the logged series."""
    from locktune.train.trainer import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    run = tmp_path / "run"
    train(demo_like(run, "train.report_to=[wandb]", "train.steps=2"), pairs=emoji_pairs)
    run_id = (run / "wandb" / "locktune_run_id").read_text().strip()
    (record,) = run.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    data = record.read_bytes()
    assert b"train/loss" in data and b"train/grad_norm" in data and b"head_lr_multiplier" in data
    assert not (run / "train_log.jsonl").exists(), "report_to without jsonl writes no JSONL log"


def test_overwrite_starts_the_event_files_and_best_model_over(tmp_path, emoji_pairs):
    from locktune.train.trainer import train

    run = tmp_path / "run"
    more = ("train.steps=2", "train.eval_every=1", "train.keep_best=validation/loss:max",
            "data.validation_fraction=0.25")
    train(demo_like(run, *more), pairs=emoji_pairs)
    train(demo_like(run, *more, "train.lr=1e-3", "train.steps=1"), pairs=emoji_pairs, overwrite=True)
    events = read_events(run / "tensorboard")
    assert events["train/loss"] == {1: as_float32(read_jsonl(run / "train_log.jsonl")["loss"][1])}
    assert sorted(events["validation/loss"]) == [0, 1]
    assert json.loads((run / "best" / "best.json").read_text())["step"] <= 1
