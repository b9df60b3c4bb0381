"""A failed collective as one line naming the process that died or hung, instead of a backend traceback.

When one process of a torchrun job dies, the others' next collective fails at once (gloo: "Connection reset by
peer", NCCL: a DistBackendError); when one hangs, theirs times out after the process group's timeout
($LOCKTUNE_DIST_TIMEOUT_S).  Either way the survivors raise `LocktuneError`, which the CLI prints as one line.

Which rank: each survivor reports itself in the process group's key-value store (which torchrun's agent keeps,
so it outlives any worker) and reads who has reported; the ranks that have not are named.  That is exact with
two processes; with more, a survivor that has not reported yet may be named too, so the line says "among".
Naming never waits: torchrun stops the survivors (SIGTERM) a moment after a worker exits, and the line must be
out before.  From the first failure on, SIGTERM is ignored so the line is written; torchrun's own summary follows.
"""

from __future__ import annotations

import datetime
import os
import re
import signal

from locktune.errors import LocktuneError

_KEY = "locktune/failed/"
RESUME = "rerun with --resume to continue from the last checkpoint"  # what a training run does next


class RankFailure(LocktuneError):
    """Another process of the run died, hung or was stopped; this one stops too (without tearing the group down)."""

_DIED = re.compile(r"(connection (?:reset|closed) by peer|broken pipe|connection refused|end of file|eof)", re.I)
_HUNG = re.compile(r"(timed out|timeout|watchdog)", re.I)


def is_collective_failure(error: BaseException) -> bool:
    """A failure of torch.distributed itself (a peer gone or silent), not a bug in the step."""
    try:
        import torch.distributed as dist

        if isinstance(error, getattr(dist, "DistError", ())):
            return True
    except ImportError:  # a torch without torch.distributed has no collectives to fail
        return False
    text = str(error)
    return isinstance(error, RuntimeError) and bool(re.search(r"gloo|nccl|ProcessGroup|c10d", text, re.I)) \
        and bool(_DIED.search(text) or _HUNG.search(text))


def _store():
    try:
        import torch.distributed as dist

        store = dist.distributed_c10d._get_default_store()  # the store the group rendezvoused through
        store.set_timeout(datetime.timedelta(seconds=2))  # a store that went with rank 0 must not hang us
        return store
    except Exception:  # noqa: BLE001 - no store, no names: the line still says what happened
        return None


def silent_ranks(rank: int, world: int) -> list[int] | None:
    """Report this rank as a survivor; the other ranks that have not reported (None: the store is gone too)."""
    store = _store()
    if store is None:
        return None
    try:
        store.set(f"{_KEY}{rank}", str(os.getpid()))
        return [r for r in range(world) if r != rank and not store.check([f"{_KEY}{r}"])]
    except Exception:  # noqa: BLE001 - the store's host (rank 0 outside torchrun) may be the one that died
        return None


def describe(error: BaseException, rank: int, world: int, during: str, timeout_s: int,
             then: str = RESUME) -> RankFailure:
    """The one-line error for a failed collective seen by `rank`."""
    ignore_sigterm()
    text = str(error)
    silent = silent_ranks(rank, world)
    if silent is None:
        who = "another process (the rendezvous store is gone too: rank 0 or the launcher stopped)"
    elif not silent:
        who = "another process"
    elif len(silent) == 1 and world == 2:
        who = f"rank {silent[0]}"
    else:
        who = f"one of ranks {', '.join(map(str, silent))}"
    died, hung = _DIED.search(text), _HUNG.search(text)
    if died:
        what = f"{who} of {world} died during {during} (its connection closed: {died.group(1)})"
    elif hung:
        what = (f"{who} of {world} did not answer within {timeout_s} s during {during}: it hangs or is far "
                f"slower (the limit is LOCKTUNE_DIST_TIMEOUT_S)")
    else:
        first = re.sub(r"^\[[^\]]*\]\s*", "", (text.strip().splitlines() or [type(error).__name__])[0])
        what = f"a collective failed during {during} ({first[:160]}); {who} of {world} may have died"
    return RankFailure(f"{what}; rank {rank} stops too. See that process's own output for why, then {then}")


def ignore_sigterm() -> None:
    """From the first failure on, torchrun's SIGTERM (sent once a worker exits) must not cut the line short; the
    process exits right after writing it."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect there
        pass
