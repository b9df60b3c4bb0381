"""Two real processes (gloo): the global loss, training steps and the precompute equal one process."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from locktune.loss import sigmoid_loss, sigmoid_loss_grads
from locktune.loss.contrastive import contrastive_loss, contrastive_loss_grads

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fn, tmp_path, *args):
    """Run fn(rank, tmp_path, *args) in WORLD processes joined in a gloo group, like torchrun would."""
    port = free_port()
    mp.start_processes(_entry, args=(fn, port, str(tmp_path), args), nprocs=WORLD, join=True, start_method="spawn")


def _entry(rank, fn, port, tmp_path, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCKTUNE_QUIET="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        fn(rank, tmp_path, *args)
    finally:
        dist.destroy_process_group()


def global_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 6, generator=g), torch.randn(8, 5, generator=g), torch.randn(6, 4, generator=g), \
        torch.randn(5, 4, generator=g)


def loss_and_grads(x_img, x_txt, w_img, w_txt, scale, chunked: bool, loss_name: str = "global"):
    """A tiny two-tower model (one linear map per side) so gradients reach real parameters.  With the sigmoid
    loss also a learned bias (-10, as at initialisation, and -3 where fewer pairs saturate)."""
    w_img, w_txt = w_img.clone().requires_grad_(), w_txt.clone().requires_grad_()
    log_scale = torch.tensor(scale).log().requires_grad_()
    bias = torch.tensor(-10.0 if scale == 10.0 else -3.0, requires_grad=True)
    img, txt = F.normalize(x_img @ w_img, dim=-1), F.normalize(x_txt @ w_txt, dim=-1)
    sigmoid = loss_name == "sigmoid"
    if chunked:
        loss, g_img, g_txt = (sigmoid_loss_grads(img, txt, log_scale.exp(), bias, chunk_rows=3) if sigmoid
                              else contrastive_loss_grads(img, txt, log_scale.exp(), chunk_rows=3))
        torch.autograd.backward([img, txt], [g_img, g_txt])
    else:
        loss = sigmoid_loss(img, txt, log_scale.exp(), bias) if sigmoid else contrastive_loss(img, txt, log_scale.exp())
        loss.backward()
    return loss.detach(), [w_img.grad, w_txt.grad, log_scale.grad] + ([bias.grad] if sigmoid else [])


def _rank_loss(rank, tmp_path, chunked, loss_name="global"):
    x_img, x_txt, w_img, w_txt = global_batch()
    rows = slice(rank * 4, rank * 4 + 4)
    loss, grads = loss_and_grads(x_img[rows], x_txt[rows], w_img, w_txt, 10.0, chunked, loss_name)
    for g in grads:  # what the trainer does after backward: average over ranks
        dist.all_reduce(g)
        g /= WORLD
    dist.all_reduce(loss)
    torch.save({"loss": loss / WORLD, "grads": grads}, os.path.join(tmp_path, f"rank{rank}.pt"))


@pytest.mark.parametrize("loss_name", ["global", "sigmoid"])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_global_loss_and_gradients_equal_single_process(tmp_path, chunked, loss_name):
    x_img, x_txt, w_img, w_txt = global_batch()
    ref_loss, ref_grads = loss_and_grads(x_img, x_txt, w_img, w_txt, 10.0, chunked=False, loss_name=loss_name)
    launch(_rank_loss, tmp_path, chunked, loss_name)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert abs(float(got["loss"]) - float(ref_loss)) < 1e-5 * max(1.0, abs(float(ref_loss)))
        assert len(got["grads"]) == len(ref_grads)
        for a, b in zip(got["grads"], ref_grads):
            assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("loss_name", ["global", "sigmoid"])
def test_chunked_loss_gradients_equal_whole_in_one_process(loss_name):
    x_img, x_txt, w_img, w_txt = global_batch()
    whole_loss, whole = loss_and_grads(x_img, x_txt, w_img, w_txt, 14.0, chunked=False, loss_name=loss_name)
    chunk_loss, chunked = loss_and_grads(x_img, x_txt, w_img, w_txt, 14.0, chunked=True, loss_name=loss_name)
    assert abs(float(whole_loss) - float(chunk_loss)) < 1e-6 * max(1.0, abs(float(whole_loss)))  # float32 sums
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, chunked))


def _rank_sigmoid_embedding_grads(rank, tmp_path, chunked):
    from test_loss_sigmoid import embeddings

    img, txt = (torch.tensor(a, dtype=torch.float32) for a in embeddings(n=8, dim=5, seed=3))
    rows = slice(rank * 4, rank * 4 + 4)
    log_scale, bias = torch.tensor(1.5, requires_grad=True), torch.tensor(-2.0, requires_grad=True)
    if chunked:
        loss, g_img, g_txt = sigmoid_loss_grads(img[rows], txt[rows], log_scale.exp(), bias, chunk_rows=3)
    else:
        i, t = img[rows].clone().requires_grad_(), txt[rows].clone().requires_grad_()
        loss = sigmoid_loss(i, t, log_scale.exp(), bias)
        loss.backward()
        g_img, g_txt = i.grad, t.grad
    loss = loss.detach().clone()
    for value in (loss, log_scale.grad, bias.grad):  # averaged over ranks, as the trainer does
        dist.all_reduce(value)
        value /= WORLD
    # The embeddings' gradients reach parameters that the trainer averages over ranks: the same 1/WORLD.
    torch.save({"loss": loss, "image": g_img / WORLD, "text": g_txt / WORLD, "log_scale": log_scale.grad,
                "bias": bias.grad}, os.path.join(tmp_path, f"rank{rank}.pt"))


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_sigmoid_loss_over_two_processes_matches_the_float64_formula(tmp_path, chunked):
    """Every image row meets every text of the global batch: each rank's share, put together, is the paper's
    formula over the whole batch (float64 reference in test_loss_sigmoid.py), loss and all gradients."""
    from test_loss_sigmoid import embeddings, reference

    ref = reference(*embeddings(n=8, dim=5, seed=3), 1.5, -2.0)
    launch(_rank_sigmoid_embedding_grads, tmp_path, chunked)
    parts = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    for part in parts:
        assert float(part["loss"]) == pytest.approx(ref["loss"], abs=1e-5)
        assert float(part["log_scale"]) == pytest.approx(ref["log_scale"], abs=1e-5)
        assert float(part["bias"]) == pytest.approx(ref["bias"], abs=1e-5)
    for key in ("image", "text"):
        got = torch.cat([part[key] for part in parts]).double()
        assert torch.allclose(got, torch.tensor(ref[key]), atol=1e-5), key


def train_config(run_dir, chunk_size=0, loss="global"):
    from tiny_configs import tiny_run

    return tiny_run(run_dir, steps=3, text_layers=2, train={"chunk_size": chunk_size, "loss": loss})


def _pairs():
    from locktune.data.pairs import load_pairs

    return load_pairs(["emoji"], max_pairs_per_source=48)


def four_step_config(run_dir, loss):
    """A 4-step run, stopped after 3 (`stop_after`) so that a resume continues the same config."""
    config = train_config(run_dir, loss=loss)
    config.train.steps = 4
    return config


def _rank_train(rank, tmp_path, parallel="replicate", loss="global"):
    from locktune.train.checkpoint import latest_checkpoint, load_checkpoint
    from locktune.train.trainer import train

    config = four_step_config(os.path.join(tmp_path, "two"), loss)
    config.train.parallel = parallel
    result = train(config, pairs=_pairs(), stop_after=3)
    if rank == 0:  # the checkpoint holds whole tensors even when training sharded them
        state = load_checkpoint(latest_checkpoint(os.path.join(tmp_path, "two")))["model"]
        torch.save({"losses": result.losses, "state": state}, os.path.join(tmp_path, "two.pt"))


def below_adam_eps(run_dir) -> dict[str, torch.Tensor]:
    """Per parameter, the elements whose gradients stayed below AdamW's eps (1e-8) in a run: there AdamW divides
    float32 rounding noise (summation order differs between one and two processes) by ~eps, so the weights may
    part by up to a learning rate while the gradients agree to ~1e-9.  From the run's last checkpoint."""
    from locktune.train.checkpoint import latest_checkpoint, load_checkpoint

    optimizer = load_checkpoint(latest_checkpoint(run_dir))["optimizer"]
    out = {}
    for name, state in optimizer["state"].items():
        if isinstance(name, str) and "exp_avg_sq" in state:
            v_hat = state["exp_avg_sq"] / (1 - 0.999 ** float(state["step"]))
            # Not where the gradient was exactly zero at every step (a token no caption uses): there both runs
            # apply the same weight decay alone, and a difference is a bug, not rounding.
            out[name] = (v_hat.sqrt() < 1e-8) & (v_hat > 0)
    return out


def assert_same_weights(run_dir, ours: dict, theirs: dict, steps: int, max_lr: float) -> None:
    """Weights agree to 1e-5, except elements below AdamW's eps (`below_adam_eps`), which may part by what
    AdamW can move an element in `steps` steps (at most ~lr each: |m_hat| / sqrt(v_hat) <= 1 near the start),
    never more: a mask that excused any difference there would let a wrong update through."""
    noise = below_adam_eps(run_dir)
    assert noise, "the optimizer state is keyed by parameter name"
    for name, value in ours.items():
        gap = (value.double() - theirs[name].double()).abs()
        close = gap <= 1e-5 + 1e-5 * theirs[name].double().abs()
        if name in noise:
            assert bool((gap[noise[name]] <= 2 * steps * max_lr).all()), name
            close |= noise[name]
        assert bool(close.all()), name


@pytest.mark.slow
@pytest.mark.parametrize("parallel,loss", [("replicate", "global"), ("fsdp", "global"), ("replicate", "sigmoid"),
                                           ("fsdp", "sigmoid")])
def test_two_process_training_equals_one_process(tmp_path, parallel, loss):
    """The CLIP-style text tower has no dropout, so one and two processes see identical arithmetic;
    with FSDP the text tower is sharded over the two and its gradients reduce-scattered."""
    from locktune.train.trainer import train

    one = train(four_step_config(tmp_path / "one", loss), pairs=_pairs(), stop_after=3)
    launch(_rank_train, tmp_path, parallel, loss)
    two = torch.load(tmp_path / "two.pt")
    assert max(abs(a - b) for a, b in zip(one.losses, two["losses"])) < 1e-5
    assert one.model.state_dict().keys() == two["state"].keys()
    assert ("logit_bias" in two["state"]) == (loss == "sigmoid")
    config = four_step_config(tmp_path / "one", loss)
    assert_same_weights(tmp_path / "one", one.model.state_dict(), two["state"], 3,
                        config.train.lr * config.train.head_lr_multiplier)
    # A checkpoint written by two processes resumes in one: the global batch does not depend on the count, and
    # the fourth step equals the one-process run's fourth (the first three are the checkpoint's own record,
    # so they are compared with the one-process run, not with the two-process run that wrote them).
    resumed = train(four_step_config(tmp_path / "two", loss), pairs=_pairs(), resume=True)
    assert resumed.steps_done == 4 and len(resumed.losses) == 4
    assert max(abs(a - b) for a, b in zip(resumed.losses[:3], one.losses)) < 1e-5
    whole = train(four_step_config(tmp_path / "one", loss), pairs=_pairs(), resume=True)
    assert abs(resumed.losses[3] - whole.losses[3]) < 1e-5


@pytest.mark.parametrize("loss", ["global", "sigmoid"])
def test_gradient_cached_training_equals_whole_batch(tmp_path, loss):
    from locktune.train.trainer import train

    whole = train(train_config(tmp_path / "whole", loss=loss), pairs=_pairs())
    chunked = train(train_config(tmp_path / "chunked", chunk_size=4, loss=loss), pairs=_pairs())
    assert max(abs(a - b) for a, b in zip(whole.losses, chunked.losses)) < 1e-5
    config = train_config(tmp_path / "whole", loss=loss)
    assert_same_weights(tmp_path / "whole", whole.model.state_dict(), chunked.model.state_dict(), config.train.steps,
                        config.train.lr * config.train.head_lr_multiplier)


def _rank_embed(rank, tmp_path):
    from locktune.cache.embedding_cache import cached_features
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    os.environ["LOCKTUNE_CACHE"] = os.path.join(tmp_path, "cache-two")
    tower = build_image_tower("mobilenet_v2", pretrained=True)
    result = cached_features(tower, preprocess_for(tower, 64), _pairs().images, batch_size=10, workers=0)
    assert result.computed


@pytest.mark.slow
def test_precompute_split_over_two_ranks_equals_one(tmp_path, monkeypatch):
    import numpy as np

    from locktune.cache.embedding_cache import cached_features
    from locktune.towers.image import build_image_tower
    from locktune.towers.image.preprocess import preprocess_for

    monkeypatch.setenv("LOCKTUNE_CACHE", str(tmp_path / "cache-one"))
    tower = build_image_tower("mobilenet_v2", pretrained=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each rank: CPU kernels sum in a thread-count-dependent order
    try:
        one = cached_features(tower, preprocess_for(tower, 64), _pairs().images, batch_size=10, workers=0)
    finally:
        torch.set_num_threads(threads)
    launch(_rank_embed, tmp_path)
    files = list((tmp_path / "cache-two" / "embeddings").glob("*.npy"))
    assert [f.name for f in files] == [one.path.name]
    assert np.array_equal(np.load(files[0]), np.load(one.path)), "bit-identical"


@pytest.mark.slow
def test_torchrun_launches_training_from_the_cli(tmp_path):
    """The real launcher: `torchrun --nproc_per_node 2 -m locktune train ...` (gloo on CPU)."""
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "locktune", "train", "data.sources=[emoji]", "data.max_pairs_per_source=48", "data.image_workers=0",
           "model.setting=Lu", "model.text_tower=clip", "model.image_tower=mobilenet_v2", "model.image_size=64",
           "model.text_width=32", "model.text_layers=1", "model.text_heads=2", "model.text_vocab_size=400",
           "train.steps=2", "train.batch_size=16", "train.warmup_steps=1", f"run_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOCKTUNE_QUIET": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained 2/2 steps") == 1, "only rank 0 reports"
    assert (run / "model" / "model.safetensors").is_file()
