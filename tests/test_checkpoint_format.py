"""Training checkpoints are safetensors + JSON: random streams round-trip exactly, and nothing in a run folder
runs code on `--resume` (a pickle payload under the old or the new name, a truncated or garbled file: one line)."""

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from locktune.errors import LocktuneError
from tiny_configs import tiny_run


class Payload:
    """Unpickling this writes the marker file: what a crafted checkpoint in a shared run folder would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def _payload_bytes(marker: Path) -> bytes:
    """A checkpoint-shaped pickle as torch.save writes it (zip) with the payload inside."""
    import io

    buffer = io.BytesIO()
    torch.save({"model": {}, "step": 3, "config": Payload(marker)}, buffer)
    return buffer.getvalue()


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """The hostile file is live: loading it with pickle writes the marker (so its absence below means
    something)."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.read_text() == "pwned"


def test_random_streams_round_trip_exactly(tmp_path):
    """Every stream of `placement.rng_state` (torch ByteTensor, numpy's MT19937 tuple with a cached Gaussian,
    Python's `getstate()` tuple with gauss_next) restored from the file draws what the original draws."""
    from locktune.runtime import placement
    from locktune.train import checkpoint as ckpt

    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    random.gauss(0.0, 1.0)  # leaves gauss_next set
    np.random.standard_normal()  # leaves has_gauss / cached_gaussian set
    state = placement.rng_state(torch.device("cpu"))
    expected = (random.random(), random.gauss(0.0, 1.0), np.random.standard_normal(5), np.random.randint(0, 10**9, 4),
                torch.rand(6), torch.randint(0, 10**9, (4,)))
    weight = torch.randn(3, 2, dtype=torch.float64)
    path = ckpt.checkpoint_path(tmp_path, 1)
    ckpt.atomic_save({"model": {"w": weight, "half": weight.to(torch.bfloat16), "empty": torch.zeros(0, 3)},
                      "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": ["w"]}]}, "scheduler": {},
                      "step": 1, "losses": [2.5, float("nan"), float("inf")], "rng": [state], "config": {"a": {1: 2}}},
                     path)
    assert path.read_bytes()[8:9] == b"{", "a safetensors header, not a pickle"
    loaded = ckpt.load_checkpoint(path)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)  # anything else
    placement.restore_rng(loaded["rng"][0], torch.device("cpu"))
    got = (random.random(), random.gauss(0.0, 1.0), np.random.standard_normal(5), np.random.randint(0, 10**9, 4),
           torch.rand(6), torch.randint(0, 10**9, (4,)))
    assert got[:2] == expected[:2]
    assert np.array_equal(got[2], expected[2]) and np.array_equal(got[3], expected[3])
    assert torch.equal(got[4], expected[4]) and torch.equal(got[5], expected[5])
    assert isinstance(loaded["rng"][0]["python"], tuple) and isinstance(loaded["rng"][0]["numpy"], tuple)
    assert loaded["rng"][0]["numpy"][1].dtype == np.uint32
    assert torch.equal(loaded["model"]["w"], weight) and loaded["model"]["half"].dtype == torch.bfloat16
    assert loaded["model"]["empty"].shape == (0, 3)
    assert loaded["losses"][0] == 2.5 and np.isnan(loaded["losses"][1]) and loaded["losses"][2] == float("inf")
    assert loaded["config"] == {"a": {1: 2}} and loaded["optimizer"]["param_groups"][0]["params"] == ["w"]


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """A tiny run stopped after 2 steps: its checkpoint's bytes, to damage."""
    from locktune.data.pairs import load_pairs
    from locktune.train.checkpoint import latest_checkpoint
    from locktune.train.trainer import train

    run = tmp_path_factory.mktemp("real")
    train(tiny_run(run, steps=4), pairs=load_pairs(["emoji"], max_pairs_per_source=48), stop_after=2)
    return latest_checkpoint(run).read_bytes()


CLI_ARGS = ["data.sources=[emoji]", "data.max_pairs_per_source=48", "data.image_workers=0", "model.setting=Lu",
            "model.text_tower=clip", "model.image_tower=mobilenet_v2", "model.image_size=64", "model.text_width=32",
            "model.text_layers=1", "model.text_heads=2", "model.text_vocab_size=400", "train.steps=4",
            "train.batch_size=16", "train.warmup_steps=1"]


def _resume_cli(run: Path, capsys) -> str:
    from locktune.cli import main

    assert main(["train", "--resume", *CLI_ARGS, f"run_dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", ["step_00000003.pt", "step_00000003.safetensors"])
def test_a_pickle_payload_where_resume_looks_runs_nothing(tmp_path, capsys, monkeypatch, name):
    """The old name is refused by name (never unpickled); under the new name the pickle is not a safetensors
    file.  Either way: one line, and the marker is never written."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / name).write_bytes(_payload_bytes(marker))
    err = _resume_cli(run, capsys)
    assert not marker.exists(), "the payload ran"
    if name.endswith(".pt"):
        assert re.search(r"older locktune \(pickled \.pt\).*Resume with the version that wrote it, or start a new "
                         r"run", err), err
    else:
        assert "cannot be read: it is damaged or not a checkpoint" in err and name in err, err


def test_an_old_pt_beside_newer_safetensors_is_not_what_resume_picks_but_is_refused_when_newest(tmp_path, capsys,
                                                                                                   real_checkpoint):
    from locktune.train.checkpoint import resume_point

    marker = tmp_path / "marker"
    run = tmp_path / "run"
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "step_00000002.safetensors").write_bytes(real_checkpoint)
    (folder / "step_00000001.pt").write_bytes(_payload_bytes(marker))
    assert resume_point(run).name == "step_00000002.safetensors"
    (folder / "step_00000003.pt").write_bytes(_payload_bytes(marker))
    assert resume_point(run).name == "step_00000003.pt"
    assert "older locktune (pickled .pt)" in _resume_cli(run, capsys)
    assert not marker.exists()


def _damaged(data: bytes) -> dict[str, bytes]:
    header = int.from_bytes(data[:8], "little")
    garbled_header = data[:8] + data[8:8 + header].replace(b'"', b"'", 3) + data[8 + header:]
    return {"truncated in the tensors": data[: len(data) - 1000], "truncated in the header": data[:100],
            "garbled header": garbled_header, "empty": b"", "random bytes": os.urandom(4096),
            "header length past the end": (2**40).to_bytes(8, "little") + data[8:]}


def test_a_truncated_or_garbled_checkpoint_is_one_line(tmp_path, real_checkpoint):
    from locktune.train.checkpoint import load_checkpoint

    for what, data in _damaged(real_checkpoint).items():
        path = tmp_path / "step_00000002.safetensors"
        path.write_bytes(data)
        with pytest.raises(LocktuneError) as caught:
            load_checkpoint(path)
        message = str(caught.value)
        assert len(message.splitlines()) == 1 and "cannot be read" in message and str(path) in message, what


def test_a_well_formed_file_with_hostile_json_is_refused(tmp_path):
    """The header parses and says it is a checkpoint, but the JSON points at tensors that are not there or
    lacks the training state: refused, one line."""
    from safetensors.torch import save_file

    from locktune.train import checkpoint_format
    from locktune.train.checkpoint import load_checkpoint

    path = tmp_path / "step_00000001.safetensors"
    for state, expected in [('{"model": {"__tensor__": "nope"}}', "cannot be read"), ('[1, 2]', "lacks model"),
                            ('{"model": {}}', "lacks optimizer"), ('{"__items__": [[[1], 2]]}', "cannot be read"),
                            ("not json", "cannot be read"),
                            ('{"a": {"__ndarray__": "x", "dtype": "|O", "shape": [1]}}', "array of Python objects")]:
        save_file({"x": torch.zeros(1)}, str(path), metadata={"format": checkpoint_format.FORMAT,
                                                              "version": str(checkpoint_format.VERSION),
                                                              "state": state})
        with pytest.raises(LocktuneError, match=expected):
            load_checkpoint(path)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": checkpoint_format.FORMAT, "version": "99",
                                                          "state": "{}"})
    with pytest.raises(LocktuneError, match="format version '99'"):
        load_checkpoint(path)


def test_a_damaged_checkpoint_stops_resume_with_one_line(tmp_path, capsys, real_checkpoint):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000002.safetensors").write_bytes(real_checkpoint[:-1000])
    err = _resume_cli(run, capsys)
    assert err.startswith("locktune: error: --resume: checkpoint") and "Remove it to resume from the one before" in err


def test_no_code_in_src_unpickles():
    """Every torch.load left in the library is the restricted one (weights_only=True)."""
    import locktune

    src = Path(locktune.__file__).parent
    for path in src.rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, f"{path}: {call}"
