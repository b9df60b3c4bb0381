"""Every fenced block in README.md and docs/**/*.md is either run here or says why it cannot be.

The marker is an HTML comment on the line before the fence (invisible on the site and on GitHub):

    <!-- runnable -->                        run as written
    <!-- runnable: train.steps=2 ... -->      run with these overrides appended to each `locktune train|demo|
                                             embed|ablate` command of the block (the `eval.*` ones also to
                                             `locktune eval`): the docs' commands, at tiny settings
    <!-- not-runnable: REASON -->            never run (a GPU, several processes, the internet, minutes of
                                             CPU, the contents of a file); the reason is required

`bash` blocks run with `bash -e` and `python` blocks as scripts, each in a subprocess, in order, in a fresh
copy of the folder the docs assume (docs/index.md lists it): `photos/` (24 PNGs + captions.tsv), `benchmark/`
(a sub-folder per class), `cat.png`, `dog.png`, `models/dinov2-small` and `models/xlm-roberta-base` (tiny
random-weight stand-ins from tests/hf_tiny.py: nothing is downloaded) and `runs/demo` (those tiny towers
trained for two steps on photos/).  Blocks of one page share their folder, so a later block sees what an
earlier one wrote (train, then eval).  A page with the line `<!-- examples: slow ... -->` (several training
runs, an ONNX export) has its test marked `slow`; the rest run in `make test`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)")
MARKER = re.compile(r"^<!--\s*(runnable|not-runnable)\s*(?::\s*(.*?))?\s*-->$")
COMMANDS_WITH_CONFIG = ("train", "demo", "embed", "ablate")
RUNNABLE_LANGUAGES = ("bash", "python")
BLOCK_TIMEOUT_S = 240


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str | None  # "runnable" | "not-runnable" | None (unmarked)
    argument: str  # the overrides of a runnable block, the reason of a not-runnable one

    def __str__(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, each with the marker on the nearest non-blank line before it."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(opening.group(1))), None)
        assert end is not None, f"{path}:{i + 1}: a fence that is never closed"
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        found.append(Block(path, i + 1, opening.group(2), "\n".join(lines[i + 1:end]) + "\n",
                           marker.group(1) if marker else None, (marker.group(2) or "") if marker else ""))
        i = end + 1
    return found


def with_overrides(script: str, overrides: list[str]) -> str:
    """The shell script with `overrides` appended to each locktune command that reads a config (`eval`: only
    the eval.* ones).  Continuation lines are joined and comments dropped from those commands."""
    logical, pending = [], ""
    for line in script.split("\n"):
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out = []
    for line in logical:
        words = shlex.split(line, comments=True) if line.strip().startswith("locktune ") else []
        if len(words) > 1 and (words[1] in COMMANDS_WITH_CONFIG or words[1] == "eval"):
            extra = overrides if words[1] != "eval" else [o for o in overrides if o.startswith("eval.")]
            # After the command's own key=value overrides (argparse takes positionals in one run), or at the end.
            at = max((k + 1 for k, w in enumerate(words) if "=" in w and not w.startswith("-")), default=len(words))
            line = shlex.join(words[:at] + extra + words[at:])
        out.append(line)
    return "\n".join(out)


def test_every_fence_is_marked_runnable_or_says_why_not():
    problems = []
    for path in doc_files():
        for block in blocks(path):
            if block.marker is None:
                problems.append(f"{block}: no <!-- runnable --> or <!-- not-runnable: reason --> before the fence")
            elif block.marker == "not-runnable" and not block.argument:
                problems.append(f"{block}: not-runnable needs a reason")
            elif block.marker == "runnable" and block.language not in RUNNABLE_LANGUAGES:
                problems.append(f"{block}: a runnable block is bash or python, not '{block.language}'")
    assert not problems, "\n".join(problems)


def test_the_marker_parser_sees_what_a_reader_would(tmp_path):
    """The parser itself: a marker counts only on the line before the fence (blank lines between allowed)."""
    text = ("x\n<!-- runnable: train.steps=2 -->\n\n```bash\nlocktune train a=1 \\\n  b=2  # c\n```\n"
            "```python\nprint(1)\n```\n<!-- not-runnable: gpu -->\n```text\nz\n```\n")
    sample = tmp_path / "sample.md"
    sample.write_text(text)
    found = blocks(sample)
    assert [(b.language, b.marker, b.argument) for b in found] == [
        ("bash", "runnable", "train.steps=2"), ("python", None, ""), ("text", "not-runnable", "gpu")]
    assert with_overrides(found[0].code, ["train.steps=2", "eval.max_images_per_benchmark=5"]).strip() == \
        "locktune train a=1 b=2 train.steps=2 eval.max_images_per_benchmark=5"
    assert with_overrides("locktune eval --model m x=1 --out f  # y\n", ["train.steps=2", "eval.plots=false"]).strip() \
        == "locktune eval --model m x=1 eval.plots=false --out f"


def _env(cache: Path) -> dict:
    env = dict(os.environ)
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", LOCKTUNE_CACHE=str(cache),
               HF_HUB_OFFLINE="1", LOCKTUNE_QUIET="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.pop("LOCKTUNE_ALLOW_DOWNLOAD", None)
    return env


def _picture(path: Path, colour, shape: str, inset: int = 0) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (48, 48), "white")
    draw = ImageDraw.Draw(image)
    box = (6 + inset, 6 + inset, 42 - inset, 42 - inset)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:  # a face: what cat.png and dog.png stand for
        draw.ellipse(box, fill=colour)
        draw.ellipse((16, 18, 20, 22), fill="black")
        draw.ellipse((28, 18, 32, 22), fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


COLOURS = {"red": (220, 30, 30), "green": (30, 170, 30), "blue": (30, 60, 220), "yellow": (230, 200, 20)}


@pytest.fixture(scope="session")
def doc_workspace(tmp_path_factory):
    """The folder the docs' examples assume (see the module docstring), built once per session."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hf_tiny import save_text, save_vision

    ws = tmp_path_factory.mktemp("doc-workspace")
    cache = tmp_path_factory.mktemp("doc-cache")
    save_vision("dinov2", ws / "models" / "dinov2-small")
    save_text("xlm_roberta", ws / "models" / "xlm-roberta-base")
    rows = ["image\tcaption"]
    for colour, rgb in COLOURS.items():
        for shape in ("circle", "square"):
            for k in range(3):
                name = f"{colour}_{shape}_{k}.png"
                _picture(ws / "photos" / name, rgb, shape, inset=2 * k)
                rows.append(f"{name}\ta {colour} {shape}")
                _picture(ws / "benchmark" / shape / f"{colour}_{k}.png", rgb, shape, inset=2 * k + 1)
    rows.insert(2, "red_circle_0.png\ta small red disc")
    (ws / "photos" / "captions.tsv").write_text("\n".join(rows) + "\n")
    _picture(ws / "cat.png", (200, 140, 60), "face")
    _picture(ws / "dog.png", (120, 90, 60), "face", inset=3)
    train = ["locktune", "train", "--config", "demo.yaml", "data.sources=[photos/]",
             "model.image_tower=hf:models/dinov2-small", "model.text_tower=hf:models/xlm-roberta-base",
             "train.steps=2", "train.batch_size=8", "train.warmup_steps=0", "run_dir=runs/demo"]
    done = subprocess.run(train, cwd=ws, env=_env(cache), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ws / "runs" / "demo" / "model").is_dir()
    return ws, cache


SLOW_PAGE = "<!-- examples: slow"


def _page(path: Path):
    slow = SLOW_PAGE in path.read_text(encoding="utf-8")
    return pytest.param(path, id=str(path.relative_to(ROOT)), marks=[pytest.mark.slow] if slow else [])


RUNNABLE = [_page(path) for path in doc_files() if any(b.marker == "runnable" for b in blocks(path))]


@pytest.mark.parametrize("path", RUNNABLE)
def test_the_runnable_blocks_of_a_page_run(path, doc_workspace, tmp_path):
    workspace, cache = doc_workspace
    work = tmp_path / "work"
    shutil.copytree(workspace, work, symlinks=True)
    env = _env(cache)
    for n, block in enumerate(b for b in blocks(path) if b.marker == "runnable"):
        if block.language == "python":
            script = tmp_path / f"block{n}.py"
            script.write_text(block.code)
            command = [sys.executable, str(script)]
        else:
            script = tmp_path / f"block{n}.sh"
            script.write_text(with_overrides(block.code, block.argument.split()))
            command = ["bash", "-eo", "pipefail", str(script)]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        assert done.returncode == 0, (f"{block} failed (exit {done.returncode}):\n{script.read_text()}\n"
                                      f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}")
