"""--resume across nodes: ranks that see different checkpoints (a run folder on a node-local disk) stop with
one line on every rank, instead of rank 0 resuming while another starts over.  Two real gloo processes."""

import json
from pathlib import Path

import pytest

from locktune.errors import LocktuneError
from locktune.train import trainer
from test_distributed import launch


def _each_rank_checks(rank, tmp_path, steps):
    tmp_path = Path(tmp_path)
    checkpoint = None if steps[rank] is None else {"step": steps[rank]}
    try:
        trainer._same_resume_step_everywhere(tmp_path, checkpoint)
        outcome = "ok"
    except LocktuneError as error:
        outcome = str(error)
    (tmp_path / f"rank{rank}.json").write_text(json.dumps(outcome))


def _outcomes(tmp_path):
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ranks_that_see_different_checkpoints_all_stop_naming_the_shared_folder(tmp_path):
    launch(_each_rank_checks, tmp_path, [40, None])
    first, second = _outcomes(tmp_path)
    assert first == second  # every rank leaves the same way: none is left waiting at a collective
    assert "rank 0: step 40, rank 1: no checkpoint" in first
    assert "filesystem every node shares" in first and str(tmp_path) in first


def test_ranks_that_agree_resume(tmp_path):
    launch(_each_rank_checks, tmp_path, [40, 40])
    assert _outcomes(tmp_path) == ["ok", "ok"]


@pytest.mark.parametrize("checkpoint", [None, {"step": 7}])
def test_one_process_always_agrees_with_itself(tmp_path, checkpoint):
    trainer._same_resume_step_everywhere(tmp_path, checkpoint)
