"""Two nodes as users launch them: two torchrun agents on this machine, each its own node of one worker, joined by
the c10d rendezvous (`--nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:PORT`), gloo on
the CPU.  Both workers then have LOCAL_RANK 0 and differ in RANK and GROUP_RANK, as on two hosts.

The sharded precompute (`locktune embed --sharded`) over WebDataset shards and training from its cache give what
one process gives; each rank reads only the images of its own shards and nothing but shard numbers passes between
ranks (seen from outside locktune by tests/multinode_site/sitecustomize.py); a node killed mid-precompute loses no
finished shard.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test_data_sources import png, write_tar
from test_distributed import assert_same_weights, free_port

TARS, PER_TAR = 4, 6  # 24 pairs; cache shards of 6 rows are the tars one for one
EMBED = ["--config", "demo.yaml", "data.image_workers=0", "model.image_size=64", "model.image_tower=mobilenet_v2"]
TRAIN = ["data.image_workers=0", "model.setting=Lu", "model.text_tower=clip", "model.image_tower=mobilenet_v2",
         "model.image_size=64", "model.text_width=32", "model.text_layers=1", "model.text_heads=2",
         "model.text_vocab_size=400", "train.steps=3", "train.batch_size=8", "train.warmup_steps=1",
         "train.log_every=1", "train.checkpoint_every=3", "eval.benchmarks=[]"]
SPY_SITE = Path(__file__).parent / "multinode_site"


def write_shards(folder: Path) -> str:
    """TARS img2dataset-style tars of PER_TAR distinct images; the brace pattern naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(TARS):
        members = []
        for i in range(t * PER_TAR, (t + 1) * PER_TAR):
            members += [(f"{i:04d}.png", png((i * 7 % 256, i * 13 % 256, 90), size=16)),
                        (f"{i:04d}.txt", f"pair {i}".encode())]
        write_tar(folder / f"{t:05d}.tar", members)
    return f"wds:{folder}/{{00000..{TARS - 1:05d}}}.tar"


def start_nodes(args: list[str], cwd: Path, env: dict | None = None) -> list[subprocess.Popen]:
    """Two torchrun agents, as `torchrun --nnodes=2 ...` typed on two hosts; each in its own session."""
    port = free_port()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=locktune-{port}",
               "-m", "locktune", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "LOCKTUNE_QUIET": "1", **(env or {})}
    return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                             env=environment, start_new_session=True) for _ in range(2)]


def finish(nodes: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    """Each agent's (exit code, stdout, stderr); agents still running after `timeout` are stopped."""
    out = []
    for node in nodes:
        try:
            stdout, stderr = node.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGTERM)
            stdout, stderr = node.communicate(timeout=60)
        out.append((node.returncode, stdout, stderr))
    return out


def run_nodes(args, cwd, env=None) -> list[tuple[int, str, str]]:
    done = finish(start_nodes(args, cwd, env))
    for code, _, stderr in done:
        assert code == 0, stderr[-3000:]
    return done


def spy_env(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return {"LOCKTUNE_TEST_SPY": str(folder), "PYTHONPATH": os.pathsep.join([str(SPY_SITE), os.environ.get("PYTHONPATH", "")])}


def reads(spy: Path, rank: int) -> list[tuple[str, int]]:
    path = spy / f"rank{rank}.reads"
    if not path.is_file():
        return []
    return [(Path(p).name, int(o)) for p, o in (line.split("\t") for line in path.read_text().splitlines())]


def one_process(args: list[str]) -> None:
    """The one-node reference, in this process with one thread (as each worker: CPU kernels sum in a
    thread-count-dependent order)."""
    from locktune.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)


def vectors(folder: Path) -> np.ndarray:
    from locktune.cache.sharded import ShardedCache

    cache = ShardedCache.open(folder, verify=True)
    return cache.rows(range(len(cache))).numpy()


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> tuple[Path, list[str]]:
    """The shards, and their sharded cache computed by one process (`one/`); the embed command line."""
    root = tmp_path_factory.mktemp("multinode")
    source = write_shards(root / "wds")
    embed = ["embed", "--shard-size", str(PER_TAR), *EMBED, f"data.sources=['{source}']"]
    one_process([*embed, "--sharded", str(root / "one")])
    return root, embed


@pytest.fixture(scope="module")
def runs(one_node):
    """One node (this process) and two nodes: the same sharded precompute, then the same training from it."""
    root, embed = one_node
    one_process(["train", *TRAIN, f"data.embedding_cache={root / 'one'}", f"run_dir={root / 'run-one'}"])
    run_nodes([*embed, "--sharded", str(root / "two")], root, spy_env(root / "spy"))
    trained = run_nodes(["train", *TRAIN, f"data.embedding_cache={root / 'two'}", f"run_dir={root / 'run-two'}"], root)
    return root, trained


def test_two_nodes_precompute_equals_one_process(runs):
    root, _ = runs
    environments = [json.loads((root / "spy" / f"rank{r}.env").read_text()) for r in (0, 1)]
    # Two nodes of one worker each, not two workers of one node.
    assert [(e["RANK"], e["LOCAL_RANK"], e["GROUP_RANK"], e["LOCAL_WORLD_SIZE"]) for e in environments] == \
        [("0", "0", "0", "1"), ("1", "0", "1", "1")]
    one, two = vectors(root / "one"), vectors(root / "two")
    assert one.shape == (TARS * PER_TAR, 1280) and np.abs(one).max() > 0.1
    assert np.array_equal(one, two), "bit-identical"
    manifest = json.loads((root / "two" / "manifest.json").read_text())
    assert len(manifest["shards"]) == TARS and manifest["valid"] == TARS * PER_TAR


def test_each_rank_reads_only_its_own_shards_and_gathers_no_vectors(runs):
    root, _ = runs
    spy = root / "spy"
    for rank in (0, 1):
        mine = reads(spy, rank)
        # Shards are dealt round-robin; a cache shard here is one tar, so rank r opens images of tars r, r+2 only.
        assert sorted({name for name, _ in mine}) == [f"{t:05d}.tar" for t in range(rank, TARS, 2)], mine
        assert len(mine) == len(set(mine)) == PER_TAR * TARS // 2, "each image decoded once"
        log = spy / f"rank{rank}.gathers"
        gathers = log.read_text().splitlines() if log.is_file() else []
        sent = sum(int(line.split("\t")[1]) for line in gathers)
        assert sent < 1000, gathers  # the shard numbers left to do; the vectors would be 24 x 1280 x 4 bytes
    assert not set(reads(spy, 0)) & set(reads(spy, 1))


def test_two_nodes_train_equals_one_process(runs):
    from locktune.config import RunConfig
    from locktune.train.checkpoint import latest_checkpoint, load_checkpoint

    root, trained = runs
    losses = {name: [json.loads(line)["loss"] for line in (root / name / "train_log.jsonl").read_text().splitlines()]
              for name in ("run-one", "run-two")}
    assert len(losses["run-one"]) == 3
    assert max(abs(a - b) for a, b in zip(losses["run-one"], losses["run-two"])) < 1e-5
    assert sum(out.count("trained 3/3 steps") for _, out, _ in trained) == 1, "only rank 0 reports"
    ours = load_checkpoint(latest_checkpoint(root / "run-two"))["model"]
    theirs = load_checkpoint(latest_checkpoint(root / "run-one"))["model"]
    assert ours.keys() == theirs.keys()
    defaults = RunConfig().train
    assert_same_weights(root / "run-one", ours, theirs, 3, defaults.lr * defaults.head_lr_multiplier)


# --------------------------------------------------------------------------------------- a node dies mid-way
def sidecars(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Each finished shard's sidecar: its modification time and bytes (a recomputed shard changes both)."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((folder / "shards").glob("*.json"))}


def wait_for(condition, what: str, nodes: list[subprocess.Popen], timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline or any(node.poll() is not None for node in nodes):
            finish(nodes, timeout=1)
            pytest.fail(f"never saw {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_node_killed_mid_precompute_resumes_without_recomputing_its_finished_shards(one_node):
    root, embed = one_node
    folder, spy = root / "killed", root / "spy-killed"
    paused = root / "paused.json"
    # Rank 1 (shards 1 and 3) stops after writing shard 1; rank 0 finishes shards 0 and 2 and waits for it.
    env = {"LOCKTUNE_TEST_PAUSE_AT": "sharded-shard-written:1", "LOCKTUNE_TEST_PAUSE_RANK": "1",
           "LOCKTUNE_TEST_PAUSE_FILE": str(paused)}
    nodes = start_nodes([*embed, "--sharded", str(folder)], root, {**spy_env(spy), **env})
    wait_for(lambda: paused.is_file() and len(sidecars(folder)) == 3, "shards 0, 1, 2 finished", nodes)
    worker = json.loads(paused.read_text())["pid"]
    agent = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
    [dead] = [node for node in nodes if node.pid == agent]
    os.kill(worker, signal.SIGKILL)  # the node goes down: its worker and its torchrun agent at once
    os.kill(agent, signal.SIGKILL)
    [(code, _, stderr)] = finish([node for node in nodes if node is not dead])
    dead.communicate()
    assert code != 0
    line = [line for line in stderr.splitlines() if line.startswith("locktune: error:")][-1]
    assert "rank 1 of 2 died during the sharded precompute" in line, stderr[-3000:]
    assert line.endswith("rerun the same `locktune embed --sharded` command on every node: finished shards are kept")
    assert not (folder / "manifest.json").exists()

    before = sidecars(folder)
    assert sorted(before) == ["00000.json", "00001.json", "00002.json"]
    for log in spy.glob("*.reads"):
        log.unlink()
    run_nodes([*embed, "--sharded", str(folder)], root, spy_env(spy))
    after = sidecars(folder)
    assert {name: after[name] for name in before} == before, "finished shards are not computed again"
    # Only the one unfinished shard's images were read again, each once, by one of the ranks.
    again = reads(spy, 0) + reads(spy, 1)
    assert sorted(again) == sorted(set(again)) and {name for name, _ in again} == {"00003.tar"} and len(again) == PER_TAR
    assert np.array_equal(vectors(folder), vectors(root / "one"))


# ----------------------------------------------------------------------- leftovers dealt, slow ranks waited for
def _rank_resume(rank, tmp_path, pattern):
    from test_data_sharded_distributed import build

    embedded = build(Path(tmp_path) / "resumed", pattern)
    (Path(tmp_path) / f"resumed{rank}.txt").write_text(str(embedded))


def test_a_resumed_precompute_deals_the_leftover_shards_over_all_ranks(tmp_path):
    """Node 1 died having finished none of its shards (1 and 3 of 4): the rerun splits them over both ranks
    instead of leaving both to rank 1 while rank 0 idles."""
    import shutil

    from test_data_sharded_cache import many_pairs
    from test_data_sharded_distributed import build
    from test_distributed import launch

    pattern = many_pairs(tmp_path, 24)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert build(tmp_path / "whole", pattern) == 24  # shards of 6 in test_data_sharded_distributed.build
    finally:
        torch.set_num_threads(threads)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    (tmp_path / "resumed" / "manifest.json").unlink()
    for shard in (1, 3):
        (tmp_path / "resumed" / "shards" / f"{shard:05d}.json").unlink()
    launch(_rank_resume, tmp_path, pattern)
    assert [int((tmp_path / f"resumed{r}.txt").read_text()) for r in (0, 1)] == [6, 6]
    assert np.array_equal(vectors(tmp_path / "resumed"), vectors(tmp_path / "whole"))


def _rank_slow_then_dead(rank, port):
    import datetime

    import torch.distributed as dist

    from locktune.runtime import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=2))
    distributed.prepare_to_wait()  # together, before the uneven work
    if rank == 1:
        time.sleep(5)  # over twice the group's limit: still working on its shards
    distributed.wait_for_peers()  # a plain barrier here fails on rank 0 after 2 s
    if rank == 1:
        os._exit(0)  # then gone without a word (an exit code would stop the test's launcher first)
    start = time.time()
    with pytest.raises(RuntimeError):
        distributed.wait_for_peers()
    assert time.time() - start < 30, "a dead rank fails the wait at once, not after hours"
    os._exit(0)  # no teardown with a dead peer


def test_ranks_wait_for_a_slower_one_beyond_the_collective_limit_but_not_for_a_dead_one():
    import torch.multiprocessing as mp

    mp.start_processes(_rank_slow_then_dead, args=(free_port(),), nprocs=2, join=True, start_method="spawn")


# ------------------------------------------------------------------------------ folders not shared by the nodes
def test_a_cache_folder_the_nodes_do_not_share_is_named_as_such(tmp_path):
    """After every rank finished, a shard rank 0 cannot see was written on another node's own disk."""
    from locktune.cache.embedding_cache import _check_parts_visible
    from locktune.cache.sharded import ShardWriter
    from locktune.errors import LocktuneError

    writer = ShardWriter(tmp_path / "cache", {"count": 4, "shard_size": 2, "dtype": "float16", "views": 1})
    writer.write(0, np.ones((2, 3), np.float32), ["a", "b"], [["x"], ["y"]], {})  # rank 0's; rank 1's shard 1 is elsewhere
    with pytest.raises(LocktuneError, match=r"cache shard 00001 .* after all 2 ranks finished: the cache folder must "
                                            r"be on a filesystem every node shares"):
        writer.summarize({}, world=2)
    with pytest.raises(LocktuneError, match=r"cache shard 00001 .* is missing or damaged; rerun `locktune embed`"):
        writer.summarize({})  # one process: the shard was simply not finished
    (tmp_path / ".entry.rank0.npz").write_bytes(b"")
    with pytest.raises(LocktuneError, match=r"rank 1's embeddings .* not visible to rank 0: .*\$LOCKTUNE_CACHE"):
        _check_parts_visible([tmp_path / ".entry.rank0.npz", tmp_path / ".entry.rank1.npz"])
