"""A process of a torchrun job that dies or hangs: the survivor ends with one locktune line naming it.

Real torchrun (`--standalone`, 2 processes, gloo).  Rank 1 stops at its second step's pause point
(`runtime/pause_point.py`, `LOCKTUNE_TEST_PAUSE_RANK=1`) while rank 0 runs on into the step's first
collective and waits there; then rank 1 either exits abruptly (`os._exit`, as a crash) or sleeps on (a hang,
caught by a 3-second collective timeout).  Each worker's stderr is its own file (`--redirects 3`), so rank 0's
is read apart from torchrun's own summary.
"""

import os
import signal
import subprocess
import sys

import pytest

from test_distributed import free_port

pytestmark = pytest.mark.slow  # several processes or a long run: `make test-slow`

ARGS = ["data.sources=[emoji]", "data.max_pairs_per_source=48", "data.image_workers=0", "model.setting=Lu",
        "model.text_tower=clip", "model.image_tower=mobilenet_v2", "model.image_size=64", "model.text_width=32",
        "model.text_layers=1", "model.text_heads=2", "model.text_vocab_size=400", "train.steps=6",
        "train.batch_size=16", "train.warmup_steps=1", "train.checkpoint_every=100"]


def _torchrun(tmp_path, env):
    logs = tmp_path / "logs"
    # torchrun checks its workers every 0.1 s by default and then stops the survivor (SIGTERM); on a loaded machine
    # that can come before the survivor's own collective has failed and said which rank died.  Every 2 s, the
    # survivor's line (what users read first) is what the test sees; torchrun still stops the job.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--monitor-interval", "2", "--log-dir", str(logs), "--redirects", "3", "-m", "locktune", "train", *ARGS,
           f"run_dir={tmp_path / 'run'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOCKTUNE_QUIET": "1", "LOCKTUNE_TEST_PAUSE_AT": "train-step:2",
           "LOCKTUNE_TEST_PAUSE_RANK": "1", "LOCKTUNE_TEST_PAUSE_FILE": str(tmp_path / "paused.json"), **env}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a hang: SIGTERM lets torchrun stop its workers (each in its own session)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    stderr = {rank: next(logs.rglob(f"{rank}/stderr.log")).read_text() for rank in (0, 1)}
    return proc, stderr


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_is_one_line_on_the_survivor(tmp_path, fault):
    env = {"LOCKTUNE_TEST_EXIT_AFTER_S": "1"} if fault == "dies" else {"LOCKTUNE_DIST_TIMEOUT_S": "3"}
    done, stderr = _torchrun(tmp_path, env)
    assert done.returncode != 0, "the job failed"
    assert (tmp_path / "paused.json").is_file(), "rank 1 reached its pause point"
    line = _last_line(stderr[0])
    assert line.startswith("locktune: error: rank 1 of 2 "), stderr[0][-3000:]
    if fault == "dies":
        assert "died during training step 2 (its connection closed: Connection" in line
    else:
        assert "did not answer within 3 s during training step 2" in line and "LOCKTUNE_DIST_TIMEOUT_S" in line
        # torchrun then stops the hung rank: it says so in one line too
        assert _last_line(stderr[1]).startswith("locktune: error: rank 1 was stopped (SIGTERM)"), stderr[1][-2000:]
    assert "--resume" in line
    assert "Traceback" not in stderr[0] and "gloo" not in stderr[0], stderr[0][-3000:]
