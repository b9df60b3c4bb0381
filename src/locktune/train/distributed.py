"""torch.distributed set-up for `torchrun`: gloo on CPU, NCCL on GPU; helpers that are no-ops alone.

Every rank holds the whole model (the towers LiT trains are small next to the batch); each rank takes
its slice of the global batch, the loss gathers embeddings from all ranks, and gradients are averaged
explicitly after the backward pass.  That is DDP's arithmetic, done by hand so that a step may be
split into chunks (gradient caching) and still reduce gradients once.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 300


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def distributed_session(timeout_s: int = DEFAULT_TIMEOUT_S):
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1), else nothing."""
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        started = True
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Mean of each gradient over ranks, in one flat all-reduce."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_ranks(value: torch.Tensor) -> float:
    """A scalar averaged over ranks (the global loss from each rank's share of it)."""
    if not is_distributed():
        return float(value)
    value = value.detach().double().reshape(1).clone()
    dist.all_reduce(value)
    return float(value) / world_size()
