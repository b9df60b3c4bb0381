"""torch.distributed set-up for `torchrun` (the backend follows the device used: `runtime/placement.py`); helpers
that are no-ops alone.

Every rank holds the whole model (the towers LiT trains are small next to the batch); each rank takes
its slice of the global batch, the loss gathers embeddings from all ranks, and gradients are averaged
explicitly after the backward pass.  That is DDP's arithmetic, done by hand so that a step may be
split into chunks (gradient caching) and still reduce gradients once.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from typing import Callable

import torch
import torch.distributed as dist

from locktune.errors import LocktuneError
from locktune.runtime import placement, rank_failure

DEFAULT_TIMEOUT_S = 300
_timeout_s = DEFAULT_TIMEOUT_S  # the running group's, for the message when a collective times out
# How long `wait_for_peers` waits for a slower rank that is still working.  Work dealt by shards ends at
# different times on different nodes (hours apart at tens of millions of images), far beyond a collective's
# limit; a rank that dies still fails the wait at once (its connection closes).
WAIT_FOR_PEERS_S = 24 * 3600
_waiting_group: tuple | None = None  # (the default group it belongs to, the gloo group with the long limit)
_alone = 0  # > 0 inside `alone()`: this process works by itself while the others wait


def is_distributed() -> bool:
    return not _alone and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def alone():
    """Work that one process does by itself while the others wait (rank 0's evaluation during training): inside,
    this process is the only one (`is_distributed()` is false, rank 0 of 1), so code that deals work over ranks
    (the embedding cache) does all of it here and waits for nobody."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


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
def distributed_session(device: str | torch.device = "auto", timeout_s: int | None = None):
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1), else nothing.
    The backend is the one for `device` (a device word, resolved by `placement`): NCCL for CUDA, gloo for the CPU,
    so `device=cpu` on a GPU host gets gloo; the process's device is made current before the group starts.

    A collective that waits longer than the timeout ($LOCKTUNE_DIST_TIMEOUT_S, default 300 s) raises, so a rank
    that hangs makes the others exit instead of hanging too; a rank that dies fails their next collective at
    once.  Either is one `LocktuneError` naming the rank (`naming_failures`), and so is torchrun's SIGTERM.
    """
    global _timeout_s
    timeout_s = timeout_s or _env_timeout()
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        resolved = placement.resolve_device(device)
        placement.use(resolved)
        dist.init_process_group(placement.backend_for(resolved), timeout=datetime.timedelta(seconds=timeout_s))
        started = True
    _timeout_s = timeout_s
    previous = _stop_on_sigterm() if started else None
    failed = False
    try:
        with naming_failures("the run"):
            yield
    except rank_failure.RankFailure:
        failed = True
        raise
    finally:
        if previous is not None and not failed:
            signal.signal(signal.SIGTERM, previous)
        if started and not failed:  # after a failure, leave at once: a dead peer may block the teardown
            dist.destroy_process_group()


def prepare_to_wait() -> None:
    """Create the group `wait_for_peers` waits in, if not done yet.  Every rank must call this at the same point
    *before* uneven work starts: creating a group is itself a collective under the group's limit."""
    global _waiting_group
    world = dist.group.WORLD if is_distributed() else None
    if world is not None and (_waiting_group is None or _waiting_group[0] is not world):
        _waiting_group = (world, dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=WAIT_FOR_PEERS_S)))


def wait_for_peers() -> None:
    """A barrier for ranks that finish uneven work (a precompute's shards): it waits up to WAIT_FOR_PEERS_S for
    a rank still computing, not the group's collective limit, and fails at once when a rank died.  A gloo group
    of its own (`prepare_to_wait`), so it holds under NCCL too."""
    if not is_distributed():
        return
    prepare_to_wait()
    dist.barrier(group=_waiting_group[1])


def union_over_ranks(items: list[int]) -> list[int]:
    """Every rank's (short) list of numbers merged, sorted and the same on every rank: which shards are left to
    do, each rank having checked its own.  Never the vectors themselves."""
    return sorted({item for part in gather_objects(list(items)) for item in part})


def gather_objects(item) -> list:
    """One small picklable value from every rank, in rank order, the same list on every rank."""
    if not is_distributed():
        return [item]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, item)
    return gathered


def _env_timeout() -> int:
    raw = os.environ.get("LOCKTUNE_DIST_TIMEOUT_S", str(DEFAULT_TIMEOUT_S))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise LocktuneError(f"LOCKTUNE_DIST_TIMEOUT_S='{raw}' is not a number of seconds (at least 1; default "
                            f"{DEFAULT_TIMEOUT_S})")
    return value


def _stop_on_sigterm():
    """torchrun sends SIGTERM to the other workers once one exits: say so in one line instead of vanishing."""
    def stop(_signum, _frame):
        rank_failure.ignore_sigterm()
        raise rank_failure.RankFailure(f"rank {rank()} was stopped (SIGTERM): torchrun does that when another "
                                       "process of the run fails (see its error above) or the job is cancelled; "
                                       "rerun with --resume to continue from the last checkpoint")

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (a test harness): keep the default
        return None


@contextlib.contextmanager
def naming_failures(during: str | Callable[[], str], then: str = rank_failure.RESUME):
    """A collective that fails inside (a peer died or hung) becomes one `LocktuneError` naming the rank and what
    this process was doing (`during`, or a function giving it) and what to do next (`then`); every other error
    passes unchanged."""
    try:
        yield
    except RuntimeError as error:
        if not is_distributed() or not rank_failure.is_collective_failure(error):
            raise
        what = during() if callable(during) else during
        raise rank_failure.describe(error, rank(), world_size(), what, _timeout_s, then) from None


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
    """A scalar averaged over ranks (the global loss from each rank's share of it), reduced on its own device."""
    if not is_distributed():
        return float(value)
    value = value.detach().double().reshape(1).clone()
    dist.all_reduce(value)
    return float(value) / world_size()


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def shard_text_tower(tower: torch.nn.Module) -> None:
    """FSDP (fully_shard): each transformer block, then the rest of the tower, sharded over the ranks.

    Parameters become sharded DTensors whose gradients FSDP reduce-scatters (averaged) in backward;
    `average_gradients` leaves those alone.  For text towers too big to replicate on every rank.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(placement.model_device(tower).type, (world_size(),))
    for module in tower.modules():
        if isinstance(module, torch.nn.ModuleList):  # the stack of blocks, in every tower we ship
            for block in module:
                fully_shard(block, mesh=mesh)
    fully_shard(tower, mesh=mesh)


def replicated(parameters) -> list:
    """The parameters every rank holds whole (not FSDP shards): these need `average_gradients`."""
    return [p for p in parameters if not _is_dtensor(p)]


def clip_gradients(parameters: list, max_norm: float) -> torch.Tensor:
    """Global-norm clipping over replicated and sharded (FSDP) gradients alike."""
    grads = [p.grad for p in parameters if p.grad is not None]
    plain = [g for g in grads if not _is_dtensor(g)]
    sharded = [g for g in grads if _is_dtensor(g)]
    total = sum((g.detach().double().pow(2).sum() for g in plain), torch.zeros((), dtype=torch.float64))
    if sharded:
        local = sum((g.to_local().detach().double().pow(2).sum() for g in sharded), torch.zeros((), dtype=torch.float64))
        dist.all_reduce(local)
        total = total + local
    norm = total.sqrt().float()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.device))
    return norm


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Whole (unsharded) model and optimizer state, keyed by parameter name, on every rank.

    A collective under FSDP: every rank must call it.  Name-keyed optimizer state is what lets a
    checkpoint written by N processes (sharded or not) resume in M.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=is_distributed())
    return get_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))
