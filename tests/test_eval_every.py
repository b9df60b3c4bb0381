"""train.eval_every / eval_suite / keep_best: evaluation during training leaves training bit for bit as it was,
keeps the best model (which loads like any saved model) with its step and value, keeps it across a resume, lets
the other processes wait out a long evaluation, and fails on bad names before the first step."""

import json
import os
import time

import pytest
import torch
from safetensors.torch import load_file

from locktune.errors import LocktuneError
from tiny_configs import tiny_run


def run_config(run_dir, steps=4, setting="Lu", **train):
    config = tiny_run(run_dir, steps=steps, train={"log_every": 1, **train}, data={"validation_fraction": 0.25})
    config.model.setting = setting
    return config


def eval_log(run):
    return [json.loads(line) for line in (run / "eval_log.jsonl").read_text().splitlines()]


def assert_same_training(a, b):
    assert a.losses == b.losses
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name


def test_training_with_evaluation_equals_training_without(tmp_path, emoji_pairs):
    """A trained image tower with batch norm in training mode (train.batchnorm=train: its running statistics move
    every step) evaluated after every step: the same losses and weights, batch-norm statistics included, as
    without evaluation."""
    from locktune.train.trainer import train

    def config(run, **evaluation):
        config = run_config(tmp_path / run, steps=2, setting="Uu", batchnorm="train", batch_size=8, **evaluation)
        config.model.image_size, config.data.decode_once = 48, False  # 8 images decoded a step: cheaper than a cache
        return config

    plain = train(config("plain"), pairs=emoji_pairs)
    watched = train(config("watched", eval_every=1, keep_best="validation/loss",
                           report_to=["jsonl", "tensorboard"]), pairs=emoji_pairs)
    assert [e["step"] for e in eval_log(tmp_path / "watched")] == [0, 1, 2]
    assert_same_training(plain, watched)


def test_evaluation_leaves_random_streams_modes_and_buffers_as_they_were():
    from locktune.train.periodic_eval import training_untouched

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5))
    model.train()
    model[2].eval()  # modes set module by module, as an unlock schedule leaves them
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    with training_untouched(model, torch.device("cpu")):
        model.eval()
        model.train()  # batch norm in training mode: a forward moves its running statistics
        model(torch.randn(16, 3))
        torch.rand(100)
    assert [m.training for m in model] == [True, True, False]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    with training_untouched(model, torch.device("cpu")):
        torch.rand(100)
    assert torch.equal(torch.rand(5), expected), "the random stream continues where it was"


def test_keep_best_keeps_the_best_step_whose_folder_loads_like_a_saved_model(tmp_path, emoji_pairs):
    from locktune.api import load
    from locktune.train.trainer import train

    run = tmp_path / "run"
    train(run_config(run, eval_every=1, keep_best="validation/loss", checkpoint_every=1,
                     keep_checkpoints=10, lr=1e-3), pairs=emoji_pairs)
    losses = {e["step"]: e["validation/loss"] for e in eval_log(run)}
    step = min(losses, key=lambda s: (losses[s], s))  # the lowest loss; the earliest of equals
    assert step > 0, "the settings should improve on the untrained model"
    record = json.loads((run / "best" / "best.json").read_text())
    assert record == {"metric": "validation/loss", "direction": "min", "value": losses[step], "step": step}
    best = load_file(str(run / "best" / "model.safetensors"))
    from locktune.train.checkpoint import load_checkpoint

    at_step = load_checkpoint(run / "checkpoints" / f"step_{step:08d}.safetensors")["model"]
    assert best.keys() == at_step.keys() and all(torch.equal(best[k], at_step[k]) for k in best)
    model = load(run / "best", device="cpu")
    assert model.encode_text(["a red heart"]).shape == (1, 256)


def test_resume_keeps_the_best_so_far(tmp_path, emoji_pairs):
    """Stopped just after its best evaluation and resumed, a run keeps that best (the same record as the
    uninterrupted run's), not the best of the evaluations after the resume."""
    from locktune.train.trainer import train

    kw = dict(steps=6, eval_every=1, keep_best="validation/loss:max", lr=1e-3)
    train(run_config(tmp_path / "whole", **kw), pairs=emoji_pairs)
    whole = json.loads((tmp_path / "whole" / "best" / "best.json").read_text())
    assert whole["step"] < 5 and whole["direction"] == "max", "a best with later evaluations to beat it"
    train(run_config(tmp_path / "split", **kw), pairs=emoji_pairs, stop_after=whole["step"] + 1)
    train(run_config(tmp_path / "split", **kw), pairs=emoji_pairs, resume=True)
    assert json.loads((tmp_path / "split" / "best" / "best.json").read_text()) == whole
    assert [e["step"] for e in eval_log(tmp_path / "split")] == list(range(7))


def test_a_benchmark_in_the_suite_is_logged_by_task_and_metric(tmp_path, emoji_pairs):
    from locktune.train.trainer import train

    config = run_config(tmp_path / "run", steps=2, eval_every=2, eval_suite=["validation", "sklearn_digits"],
                        keep_best="sklearn_digits/top1")
    config.eval.max_images_per_benchmark = 50
    train(config, pairs=emoji_pairs)
    entries = eval_log(tmp_path / "run")
    assert [e["step"] for e in entries] == [0, 2]
    assert {"sklearn_digits/top1", "validation/image_to_text_R@1"} <= set(entries[0])
    assert 0 <= entries[0]["sklearn_digits/top1"] <= 1
    assert json.loads((tmp_path / "run" / "best" / "best.json").read_text())["direction"] == "max"


@pytest.mark.parametrize("change, message", [
    (dict(eval_every=2, validation=0.0), r"train.eval_suite evaluates the validation pairs, but "
                                         r"data.validation_fraction is 0"),
    (dict(eval_every=2, eval_suite=["fashion_mnst"]), r"train.eval_suite 'fashion_mnst' is not 'validation', a "
                                                      r"suite \(ablation.*\) or a benchmark: unknown benchmark"),
    (dict(eval_every=2, keep_best="fashion_mnist/top1"), r"train.keep_best 'fashion_mnist/top1' names task "
                                                         r"'fashion_mnist', which train.eval_suite does not run; "
                                                         r"its tasks: validation$"),
    (dict(eval_every=2, keep_best="validation/top1:up"), r"the direction after ':' is max or min, not 'up'"),
])
def test_bad_evaluation_settings_are_one_line_before_any_data(tmp_path, change, message):
    from locktune.train.trainer import train

    validation = change.pop("validation", 0.25)
    config = run_config(tmp_path / "run", **change)
    config.data.validation_fraction = validation
    config.data.sources = ["no_such_source"]  # loading data would fail otherwise
    with pytest.raises(LocktuneError, match=message):
        train(config)


def test_a_metric_the_evaluation_lacks_fails_before_the_first_step(tmp_path, emoji_pairs):
    from locktune.train.trainer import train

    run = tmp_path / "run"
    with pytest.raises(LocktuneError, match=r"train.keep_best: the evaluation has no metric 'validation/top1'; it "
                                            r"has .*validation/image_to_text_R@1.*validation/loss"):
        train(run_config(run, eval_every=2, keep_best="validation/top1"), pairs=emoji_pairs)
    assert not (run / "checkpoints").exists() and not (run / "train_log.jsonl").exists()


def test_keep_best_without_eval_every_is_refused_at_load():
    from locktune.config import load_config

    with pytest.raises(LocktuneError, match=r"train.keep_best=validation/top1 needs evaluations to compare: set "
                                            r"train.eval_every=N too"):
        load_config(overrides=["train.keep_best=validation/top1"])


def _rank(rank, port, run_dir, result_dir):
    """One of two processes whose main group times out after 10 s; rank 0's first evaluation takes 20 s.  A cache
    folder of their own: rank 0 embeds the held-out images alone while rank 1 waits (nothing cached before)."""
    import datetime

    import torch.distributed as dist

    from locktune.data.pairs import load_pairs
    from locktune.train import periodic_eval
    from locktune.train.trainer import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCKTUNE_QUIET="1", LOCKTUNE_CACHE=str(result_dir / "cache"))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=10))
    if rank == 0:
        evaluate = periodic_eval.TrainingEvaluation._evaluate

        def slow(self, model):
            if not getattr(self, "slowed", False):
                self.slowed = True
                time.sleep(20)
            return evaluate(self, model)

        periodic_eval.TrainingEvaluation._evaluate = slow
    try:
        result = train(run_config(run_dir, steps=2, eval_every=1), pairs=load_pairs(["emoji"], 96))
        (result_dir / f"rank{rank}.json").write_text(json.dumps(result.losses))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~30 s: it waits out a real collective timeout
def test_other_processes_wait_out_an_evaluation_longer_than_the_collective_timeout(tmp_path):
    import torch.multiprocessing as mp

    from test_distributed import free_port

    mp.start_processes(_rank, args=(free_port(), tmp_path / "run", tmp_path), nprocs=2, join=True,
                       start_method="spawn")
    losses = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    assert [e["step"] for e in eval_log(tmp_path / "run")] == [0, 1, 2], "the first process alone reports"
