"""Hostile model files (issue 25, items 4-6, model side): a saved model's manifest, an `hf:` folder's config,
image-processor config and weights are files someone else wrote.  Each hostile number or damaged file is one
line naming the file and the field (or what is wrong) and is refused before anything is allocated; an image
whose embedding is zero or not finite is never counted as embedded.

Every hostile file is built in tmp_path from a tiny model (`hf_tiny.py`, `test_api.tiny_net`).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_tiny import save_text, save_vision
from locktune.errors import LocktuneError

MANIFEST = "locktune_model.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from locktune.api import LitModel
    from test_api import tiny_net

    root = tmp_path_factory.mktemp("hostile-models")
    return {"vit": save_vision("vit", root / "vit"), "bert": save_text("bert", root / "bert"),
            "saved": LitModel(tiny_net("Lu")).save(root / "saved")}


def copied(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(folder, tmp_path / name))


def edit_json(path: Path, changes: dict) -> None:
    """Set dotted keys ("preprocess.std") in a JSON file."""
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(json.dumps(data))


@contextmanager
def address_space_cap(extra: int = 4 << 30):
    """At most `extra` more bytes of address space inside the block: a refusal that came after a large
    allocation fails the test with a MemoryError instead of taking the machine's memory (the soft limit is
    raised back after; the hard limit is untouched)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith("VmSize:"))) * 1024
    cap = in_use + extra if hard == resource.RLIM_INFINITY else min(in_use + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def cli_error(capsys, args: list[str]) -> str:
    """Run the CLI (under `address_space_cap`); it must fail with one line on stderr and no traceback.
    Returns that line."""
    from locktune.cli import main

    with address_space_cap():
        code = main(args)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def nothing_built(monkeypatch) -> None:
    """Building any tower fails the test: a refusal must come before construction."""
    import locktune.towers.image

    def refuse(*args, **kwargs):
        raise AssertionError("a tower was built from a hostile file")

    monkeypatch.setattr(locktune.towers.image, "build_image_tower", refuse)


# --- 1. a saved model's manifest: every number bounded before anything is built -------------------------------

MANIFEST_CASES = [
    ({"model.image_size": 20000}, "model.image_size = 20000 is above the limit 2048"),
    ({"model.embed_dim": 10**7}, "model.embed_dim = 10000000 is above the limit 16384"),
    ({"embed_dim": 10**7}, "embed_dim = 10000000 is above the limit 16384"),
    ({"model.embed_dim": -3}, "model.embed_dim = -3 is below 1"),
    ({"model.image_size": "big"}, "model.image_size = 'big' is not a whole number"),
    ({"model.text_layers": 10**4}, "model.text_layers = 10000 is above the limit 128"),
    ({"model.text_vocab_size": 10**9}, "model.text_vocab_size = 1000000000 is above the limit 1048576"),
    ({"model.max_text_len": 10**8}, "model.max_text_len = 100000000 is above the limit 65536"),
    # Each field within its limit, together 412e9 parameters (12 x 16384^2 x 128): refused by the total.
    ({"model.text_width": 16384, "model.text_layers": 128},
     f"parameter count of its architecture = {12 * 16384**2 * 128 + (300 + 16) * 16384} is above the limit"),
    ({"preprocess.image_size": 20000}, "preprocess.image_size = 20000 is above the limit 2048"),
    ({"preprocess.std": [0, 0, 0]}, "preprocess.std = [0, 0, 0] is 0: every pixel would divide by zero"),
    ({"preprocess.std": [0.2, 0.2]}, "preprocess.std = [0.2, 0.2] is not 1 or 3 numbers"),
    ({"preprocess.mean": [float("nan")] * 3}, "preprocess.mean = [nan, nan, nan] is not all finite"),
    ({"preprocess.std": [1e6, 1, 1]}, "preprocess.std = [1000000.0, 1, 1] is outside [0.001, 100]"),
    ({"preprocess.background": [300, 0, 0]}, "preprocess.background = [300, 0, 0] is not three whole numbers"),
]


@pytest.mark.parametrize("changes, message", MANIFEST_CASES, ids=[next(iter(c)) for c, _ in MANIFEST_CASES])
def test_a_hostile_manifest_number_is_one_line_naming_the_field_before_any_build(tiny, tmp_path, monkeypatch,
                                                                                 changes, message):
    import locktune

    folder = copied(tiny["saved"], tmp_path)
    edit_json(folder / MANIFEST, changes)
    nothing_built(monkeypatch)
    with pytest.raises(LocktuneError) as refused, address_space_cap():
        locktune.load(folder, device="cpu")
    text = str(refused.value)
    assert message in text and str(folder / MANIFEST) in text and "\n" not in text, text


def test_an_old_runs_model_pt_is_bounded_too(tmp_path, monkeypatch):
    import locktune
    from test_api import tiny_net

    net = tiny_net("Lu", "clip")
    config = {**vars(net.config), "embed_dim": 10**7}
    torch.save({"format": 1, "config": {"model": config}, "tokenizer_json": None, "state_dict": net.state_dict()},
               tmp_path / "model.pt")
    with pytest.raises(LocktuneError, match=r"model.pt' config: model.embed_dim = 10000000 is above the limit 16384"), \
            address_space_cap():
        locktune.load(tmp_path / "model.pt", device="cpu")


# Run under a 4 GB address-space limit and a time limit: before the checks these cases allocated 4.8 GB (a
# 20000 px probe), 51 GB (a 10^7-wide projection), 17 GB (a 65536-wide layer) and 10.8 GB (a 30000 px probe),
# and a 1 px patch at 2048 px ran a probe attention over 4 million tokens (still running after 5 minutes).
UNDER_LIMIT = r"""
import json, sys
import locktune
from locktune.errors import LocktuneError
from locktune.towers.image import build_image_tower
out = {}
for name, call in [("image_size", lambda: locktune.load(sys.argv[1], device="cpu")),
                   ("embed_dim", lambda: locktune.load(sys.argv[2], device="cpu")),
                   ("hidden_u", lambda: build_image_tower("hf:" + sys.argv[3], pretrained=False, pool="auto")),
                   ("processor_L", lambda: build_image_tower("hf:" + sys.argv[4], pretrained=True, pool="auto")),
                   ("patch_1", lambda: build_image_tower("hf:" + sys.argv[5], pretrained=False, pool="auto"))]:
    try:
        call()
        out[name] = "loaded"
    except LocktuneError as error:
        out[name] = "refused: " + str(error)
    except BaseException as error:
        out[name] = f"crashed: {type(error).__name__}"
print(json.dumps(out))
"""


def test_hostile_sizes_are_refused_without_a_large_allocation(tiny, tmp_path):
    big_image = copied(tiny["saved"], tmp_path, "image_size")
    edit_json(big_image / MANIFEST, {"model.image_size": 20000, "preprocess.image_size": 20000})
    big_embed = copied(tiny["saved"], tmp_path, "embed_dim")
    edit_json(big_embed / MANIFEST, {"model.embed_dim": 10**7, "embed_dim": 10**7})
    wide = copied(tiny["vit"], tmp_path, "wide")
    edit_json(wide / "config.json", {"hidden_size": 65536})
    big_processor = copied(tiny["vit"], tmp_path, "processor")
    edit_json(big_processor / "preprocessor_config.json", {"size": {"height": 30000, "width": 30000}})
    patch_1 = copied(tiny["vit"], tmp_path, "patch_1")
    edit_json(patch_1 / "preprocessor_config.json", {"size": {"height": 2048, "width": 2048}})
    edit_json(patch_1 / "config.json", {"patch_size": 1})

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    result = subprocess.run([sys.executable, "-c", UNDER_LIMIT, str(big_image), str(big_embed), str(wide),
                             str(big_processor), str(patch_1)], capture_output=True, text=True, preexec_fn=limit,
                            timeout=150,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "model.image_size = 20000" in out["image_size"]
    assert "model.embed_dim = 10000000" in out["embed_dim"]
    assert "hidden_size = 65536" in out["hidden_u"] and str(wide / "config.json") in out["hidden_u"]
    assert "size.height = 30000" in out["processor_L"]
    assert "patch_size = 1 is 4194304 patch tokens at 2048 px, above the limit 16384" in out["patch_1"]


# --- 2. an hf: folder's config and image-processor config --------------------------------------------------------

HF_CASES = [
    ("vit", "config.json", {"hidden_size": 65536}, "hidden_size = 65536 is above the limit 16384"),
    ("vit", "config.json", {"num_hidden_layers": 100000}, "num_hidden_layers = 100000 is above the limit 128"),
    ("vit", "config.json", {"intermediate_size": 10**9}, "intermediate_size = 1000000000 is above the limit 65536"),
    ("vit", "config.json", {"image_size": 30000}, "image_size = 30000 is above the limit 2048"),
    ("vit", "config.json", {"hidden_size": 0}, "hidden_size = 0 is below 1"),
    ("vit", "preprocessor_config.json", {"size": {"height": 30000, "width": 30000}},
     "size.height = 30000 is above the limit 2048"),
    ("vit", "preprocessor_config.json", {"image_std": [0, 0, 0]}, "image_std = [0, 0, 0] is 0"),
    ("vit", "preprocessor_config.json", {"image_mean": [float("inf")] * 3}, "image_mean = [inf, inf, inf] is not all "
     "finite"),
    ("vit", "preprocessor_config.json", {"image_std": [0.5, 0.5]}, "image_std = [0.5, 0.5] is not 1 or 3 numbers"),
    # Every field within its limit; together 412e9 parameters, counted on the meta device.
    ("vit", "config.json", {"hidden_size": 16384, "num_hidden_layers": 128, "intermediate_size": 65536,
                            "num_attention_heads": 128}, "parameter count of its architecture = "),
    ("bert", "config.json", {"vocab_size": 10**9}, "vocab_size = 1000000000 is above the limit 1048576"),
    ("bert", "config.json", {"max_position_embeddings": 10**8}, "max_position_embeddings = 100000000 is above"),
]


@pytest.mark.parametrize("kind, file, changes, message", HF_CASES,
                         ids=[f"{k}-{next(iter(c))}" for k, _, c, _ in HF_CASES])
def test_a_hostile_hf_config_number_is_one_line_naming_the_file_and_field(tiny, tmp_path, capsys, kind, file, changes,
                                                                         message):
    folder = copied(tiny[kind], tmp_path)
    edit_json(folder / file, changes)
    err = cli_error(capsys, ["towers", f"hf:{folder}"])  # builds the tower as `u` would
    assert message in err and str(folder) in err, err
    if "parameter count" in message:  # at least the layers' weight matrices: 128 x (4 h^2 + 2 h I)
        counted = int(re.search(r"architecture = (\d+)", err).group(1))
        assert counted >= 128 * (4 * 16384**2 + 2 * 16384 * 65536) > 25_000_000_000
    if file == "config.json":
        assert str(folder / "config.json") in err


def test_real_tiny_towers_stay_within_every_limit(tiny):
    """The limits refuse nothing real: the tiny towers (and the saved model) build and load as before."""
    import locktune
    from locktune.towers.image import build_image_tower

    tower = build_image_tower(f"hf:{tiny['vit']}", pretrained=True, pool="auto")
    assert tower.output_dim == 32 and tower.preprocess(0).std == (0.5, 0.5, 0.5)
    assert locktune.load(tiny["saved"], device="cpu").embed_dim == 256


# --- 3. safetensors read defensively -------------------------------------------------------------------------------

def _rewrite(path: Path, header: dict | bytes, data: bytes, length: int | None = None) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)


def _split(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def hostile_safetensors(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a damaged copy of `good`, what the refusal must say)."""
    header, data = _split(good)
    name = next(k for k in header if k != "__metadata__")
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}

    def case(label, message, **how):
        path = folder / f"{label}.safetensors"
        _rewrite(path, how.get("header", header), how.get("data", data), how.get("length"))
        cases[label] = (path, message)

    case("truncated", "(the file is truncated)", data=data[: len(data) // 2])
    case("header_2_62", "its header claims 4,611,686,018,427,387,904 bytes", length=2**62)
    lie = json.loads(json.dumps(header))
    lie[name]["shape"] = [s * 1000 for s in lie[name]["shape"]]
    case("lying_shape", f"tensor '{name}' claims shape", header=lie)
    case("not_json", "its header is not valid JSON", header=b"{not json" + b" " * 7)
    overlap = json.loads(json.dumps(header))
    second = [k for k in header if k not in ("__metadata__", name)][0]
    span = overlap[second]["data_offsets"][1] - overlap[second]["data_offsets"][0]
    overlap[second]["data_offsets"] = [0, span]  # on top of the first tensor's bytes
    case("overlap", "overlaps another tensor's bytes", header=overlap)
    return cases


def test_safetensors_headers_are_checked_against_the_file(tiny, tmp_path):
    from safetensors import safe_open

    from locktune.safe_files import check_safetensors, tensor_bytes

    good = tiny["vit"] / "model.safetensors"
    header = check_safetensors(good, "test", "redo it")
    with safe_open(str(good), framework="pt") as f:  # the reference reader agrees on every name and shape
        assert {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} == \
               {k: tuple(v["shape"]) for k, v in header.items()}
        assert tensor_bytes(header) == sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())
    for label, (path, message) in hostile_safetensors(good, tmp_path / "bad").items():
        with pytest.raises(Exception):  # really damaged: the reference reader refuses it (with a traceback)
            with safe_open(str(path), framework="pt") as f:
                [f.get_tensor(k) for k in f.keys()]
        with pytest.raises(LocktuneError) as refused:
            check_safetensors(path, "test", "download it again")
        text = str(refused.value)
        assert message in text and str(path) in text and text.endswith("download it again"), (label, text)


@pytest.mark.parametrize("label", ["truncated", "header_2_62", "lying_shape", "not_json", "overlap"])
def test_a_damaged_hf_safetensors_file_is_one_line_saying_download_it_again(tiny, tmp_path, capsys, label):
    folder = copied(tiny["vit"], tmp_path, "vit")
    path, message = hostile_safetensors(tiny["vit"] / "model.safetensors", tmp_path / "bad")[label]
    shutil.copy(path, folder / "model.safetensors")
    err = cli_error(capsys, ["towers", f"hf:{folder}"])
    assert message in err and str(folder / "model.safetensors") in err and "download it again" in err, err
    from locktune.towers.image import build_image_tower

    with pytest.raises(LocktuneError, match="download it again"):
        build_image_tower(f"hf:{folder}", pretrained=True, pool="auto")


def test_a_damaged_saved_model_weights_file_is_one_line(tiny, tmp_path, monkeypatch):
    import locktune

    folder = copied(tiny["saved"], tmp_path)
    path, message = hostile_safetensors(folder / "model.safetensors", tmp_path / "bad")["truncated"]
    shutil.copy(path, folder / "model.safetensors")
    nothing_built(monkeypatch)
    with pytest.raises(LocktuneError, match=r"\(the file is truncated\); copy the folder again, or export"):
        locktune.load(folder, device="cpu")


class _Payload:
    def __reduce__(self):  # what a malicious pickle does: run code while being unpickled
        return (os.system, ("touch pwned",))


def test_pickle_weights_in_an_hf_folder_hold_tensors_only_else_one_line(tiny, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file

    from locktune.towers.image import build_image_tower

    monkeypatch.chdir(tmp_path)
    state = load_file(str(tiny["vit"] / "model.safetensors"))
    plain = copied(tiny["vit"], tmp_path, "plain")
    (plain / "model.safetensors").unlink()
    torch.save(state, plain / "pytorch_model.bin")  # tensors only: read with torch's restricted unpickler
    loaded = build_image_tower(f"hf:{plain}", pretrained=True, pool="auto").model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    hostile = copied(plain, tmp_path, "hostile")
    torch.save({**state, "payload": _Payload()}, hostile / "pytorch_model.bin")
    err = cli_error(capsys, ["embed", f"model.image_tower=hf:{hostile}", "data.sources=[emoji]", "--no-benchmarks"])
    assert "pytorch_model.bin" in err and "hold more than tensors" in err and "safetensors" in err, err
    assert not (tmp_path / "pwned").exists()


# --- 4. honest counts: a zero or non-finite embedding is never "indexed" ---------------------------------------------

def _pictures(folder: Path, blank: int, coloured: int) -> tuple[set[str], set[str]]:
    """White (blank) and coloured PNGs; returns (blank names, coloured names)."""
    folder.mkdir(parents=True)
    names = set(), set()
    for i in range(blank):
        Image.new("RGB", (40, 40), (255, 255, 255)).save(folder / f"blank_{i}.png")
        names[0].add(f"blank_{i}.png")
    for i in range(coloured):
        Image.new("RGB", (50, 30), (200 - 60 * i, 40, 60 + 60 * i)).save(folder / f"colour_{i}.png")
        names[1].add(f"colour_{i}.png")
    return names


@pytest.fixture
def broken_tower(tiny, monkeypatch):
    """The saved model's image tower class with a forward that returns `bad` (0 or NaN) for white images
    (normalised pixels averaging above 2.3: white is ~2.44, the coloured pictures below 1), as a tower
    behind a broken normalisation would.  Returns a setter for which value and which images."""
    import locktune
    from locktune.towers.setting import unwrap

    cls = type(unwrap(locktune.load(tiny["saved"], device="cpu").net.image_tower))
    forward = cls.forward
    state = {"bad": 0.0, "all": False}

    def broken(self, pixels):
        out = forward(self, pixels)
        white = pixels.mean(dim=(1, 2, 3)) > 2.3
        hit = torch.ones_like(white) if state["all"] else white
        return torch.where(hit.unsqueeze(1), torch.full_like(out, state["bad"]), out)

    monkeypatch.setattr(cls, "forward", broken)
    return state


def test_zero_and_non_finite_embeddings_are_skipped_with_a_reason(tiny, tmp_path, capsys, broken_tower):
    from locktune.cache.image_side import NONFINITE_EMBEDDING, ZERO_EMBEDDING
    from locktune.cli import main

    for bad, reason in [(0.0, ZERO_EMBEDDING), (float("nan"), NONFINITE_EMBEDDING)]:
        broken_tower["bad"] = bad
        folder = tmp_path / f"photos-{bad}"
        blank, coloured = _pictures(folder, blank=2, coloured=3)
        out = tmp_path / f"index-{bad}"
        assert main(["index", str(folder), "--model", str(tiny["saved"]), "--out", str(out), "--device", "cpu"]) == 0
        meta = json.loads((out / "index.json").read_text())
        assert {e["path"] for e in meta["images"]} == coloured and meta["count"] == 3
        assert meta["skipped"] == {name: reason for name in blank}
        embeddings = np.load(out / "embeddings.npy")
        assert embeddings.shape == (3, 256) and np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
        assert f"3 images (2 skipped: 2 {reason})" in capsys.readouterr().out


def test_the_eval_side_counts_zero_features_as_unusable(tiny, tmp_path, broken_tower):
    import locktune
    from locktune.cache.image_side import ZERO_EMBEDDING, image_set_features
    from locktune.data.images import FileImages

    blank, coloured = _pictures(tmp_path / "photos", blank=1, coloured=2)
    paths = sorted((tmp_path / "photos").iterdir())
    side = image_set_features(locktune.load(tiny["saved"], device="cpu").net, FileImages(paths))
    assert [bool(v) for v in side.valid] == [p.name in coloured for p in paths]
    assert side.failed == {str(tmp_path / "photos" / name): ZERO_EMBEDDING for name in blank}
    assert torch.equal(side.zeroed()[~side.valid], torch.zeros(1, side.features.shape[1]))


def test_no_usable_image_fails_the_index_command_with_the_reason(tiny, tmp_path, capsys, broken_tower):
    broken_tower["all"] = True  # every embedding zero, as a std of 0 made them
    _pictures(tmp_path / "photos", blank=1, coloured=3)
    err = cli_error(capsys, ["index", str(tmp_path / "photos"), "--model", str(tiny["saved"]),
                             "--out", str(tmp_path / "index"), "--device", "cpu"])
    assert "none of the 4 images" in err and "4 embedding is zero: check the model's normalisation" in err, err
    assert not (tmp_path / "index" / "index.json").exists()
