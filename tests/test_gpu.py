"""What only a GPU can show: the gradient cache with dropout and bf16 on CUDA, the loss across NCCL processes,
ONNX on onnxruntime's CUDA provider.  Marked `cuda`; without a CUDA device each skips with its reason.
`make gpu-check` (benchmarks/gpu_check.py) runs them on a GPU machine with `pytest -m cuda`."""

from __future__ import annotations

import os
import socket
from contextlib import nullcontext

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from locktune.loss.contrastive import contrastive_loss, contrastive_loss_grads
from locktune.train.step import gradient_cached_step, whole_step
from test_step import BF16_RELATIVE, BF16_VS_FP32, CHUNK, bert, check_cached_equals_whole, gradients, make_batch, \
    make_model, relative  # noqa: F401  (bert: the fixture)

NO_CUDA = "needs a CUDA device (none visible); `make gpu-check` runs it on a GPU machine"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]


def test_cached_step_equals_whole_step_with_dropout_on_cuda(bert):
    """The replay draws the no-graph pass's masks on the GPU's generator too (seeded per chunk)."""
    check_cached_equals_whole(bert, device="cuda", tolerance=1e-5)


def test_seeded_steps_leave_the_cuda_generator_alone(bert):
    model = make_model(bert, device="cuda")
    batch = make_batch(model, device="cuda")
    before = torch.cuda.get_rng_state()
    gradient_cached_step(model, batch, nullcontext(), CHUNK, seed=3)
    assert torch.equal(before, torch.cuda.get_rng_state())


def test_cached_step_bf16_on_cuda_within_stated_tolerance(bert):
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    check_cached_equals_whole(bert, device="cuda", autocast=autocast, tolerance=BF16_RELATIVE)
    model = make_model(bert, device="cuda")
    batch = make_batch(model, device="cuda")
    loss, bf16 = gradients(gradient_cached_step, model, batch, autocast, chunk=CHUNK, seed=5)
    _, fp32 = gradients(whole_step, model, batch, chunk=CHUNK, seed=5)
    assert loss.dtype == torch.float32 and loss.device.type == "cuda"
    assert relative(bf16, fp32) < BF16_VS_FP32, relative(bf16, fp32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nccl_rank(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        image, text = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
        rows = slice(rank * 8 // world, (rank + 1) * 8 // world)
        img = F.normalize(image[rows].cuda(), dim=-1).requires_grad_()
        txt = F.normalize(text[rows].cuda(), dim=-1).requires_grad_()
        scale = torch.tensor(10.0, device="cuda")
        loss = contrastive_loss(img, txt, scale)
        loss.backward()
        chunked, g_img, _ = contrastive_loss_grads(img, txt, scale, chunk_rows=2)
        loss = loss.detach()
        for t in (loss, chunked):
            dist.all_reduce(t)
        torch.save({"loss": float(loss) / world, "chunked": float(chunked) / world, "grad": img.grad.cpu(),
                    "chunked_grad": g_img.cpu()}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [1, 2])
def test_global_loss_over_nccl_equals_float64_reference(tmp_path, world):
    """Each rank's loss is the mean over its rows against all gathered columns; the gather's backward sums
    over ranks, so each rank's gradient is world x d(global loss)/d(its rows) (the trainer then averages)."""
    if torch.cuda.device_count() < world:
        pytest.skip(f"needs {world} GPUs, this machine has {torch.cuda.device_count()}")
    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    mp.start_processes(_nccl_rank, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True,
                       start_method="spawn")
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(8, 16, generator=g).double(), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(8, 16, generator=g).double(), dim=-1)
    logits = 10.0 * image @ text.T
    labels = torch.arange(8)
    reference = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    reference.backward()
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert abs(got["loss"] - float(reference)) < 1e-5 and abs(got["chunked"] - float(reference)) < 1e-5
        expected = world * image.grad[rank * 8 // world:(rank + 1) * 8 // world]
        assert torch.allclose(got["grad"].double(), expected, atol=1e-5)
        assert torch.allclose(got["chunked_grad"].double(), expected, atol=1e-5)


def test_onnx_text_and_image_towers_on_cuda_provider(tmp_path):
    # An optional extra on the GPU machine (ONNX_GPU=1 benchmarks/gpu_wheels.sh fetches onnxruntime-gpu).
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime(-gpu) is not installed on this GPU machine")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime here has no CUDA provider ({ort.get_available_providers()}); "
                    "install onnxruntime-gpu to run it")
    from locktune.export.onnx import export_onnx
    from test_api import tiny_net

    net = tiny_net("Lu", "clip")
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 64, 64)
    tokens = net.tokenize(["a red square", "tree", "a blue circle"])
    with torch.no_grad():
        image_ref, text_ref = net.encode_image(pixels).numpy(), net.encode_text(tokens["ids"], tokens["mask"]).numpy()
    paths = export_onnx(net, tmp_path)
    providers = ["CUDAExecutionProvider"]
    image_session = ort.InferenceSession(str(paths["image"]), providers=providers)
    text_session = ort.InferenceSession(str(paths["text"]), providers=providers)
    assert image_session.get_providers()[0] == "CUDAExecutionProvider"
    image = image_session.run(None, {"pixels": pixels.numpy()})[0]
    text = text_session.run(None, {"ids": tokens["ids"].numpy(), "mask": tokens["mask"].numpy()})[0]
    import numpy as np

    np.testing.assert_allclose(image, image_ref, atol=1e-3)  # TF32 / cuDNN kernels: looser than the CPU's 1e-4
    np.testing.assert_allclose(text, text_ref, atol=1e-3)
