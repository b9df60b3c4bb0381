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
def runs(tmp_path_factory):
    """One node (this process) and two nodes: the same sharded precompute, then the same training from it."""
    root = tmp_path_factory.mktemp("multinode")
    source = write_shards(root / "wds")
    embed = ["embed", "--shard-size", str(PER_TAR), *EMBED, f"data.sources=['{source}']"]
    one_process([*embed, "--sharded", str(root / "one")])
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
        gathers = (spy / f"rank{rank}.gathers").read_text().splitlines()
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
