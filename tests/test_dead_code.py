"""No dead code in src/locktune: every function, class, method, constant and attribute is used somewhere.

vulture reads the source (nothing is imported) and reports the names that nothing refers to.  Uses are counted
in src/locktune and in what else the repository runs (scripts/, benchmarks/, tests/), so a helper the tests or
a benchmark call is not dead; only names in src/locktune are reported.  What vulture cannot see is absorbed in
two places, both short:
- decorators that register a function by name (benchmarks, pair sources, towers, findings, evaluators, FastAPI
  routes): IGNORED_DECORATORS below;
- names a library uses through a protocol or by reflection: tests/vulture_allowlist.py, each with who uses it.

--min-confidence 60: vulture gives every unused function, class, method, variable and attribute 60% (a name
can always be reached dynamically), an unused import 90%, unreachable code and an unused argument 100%.  At 61
or above it would report imports and arguments only, never a dead function; 60 is the only threshold that
checks what this test is for.

To see the report by hand: the command in the failure message (run from the repository root).
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOWLIST = "tests/vulture_allowlist.py"
MIN_CONFIDENCE = 60  # see the module docstring
IGNORED_DECORATORS = ["@*.register", "@finding", "@on_benchmark", "@app.*"]
USERS = ["scripts", "benchmarks", "tests"]  # where uses count besides src/locktune itself


def vulture_command(paths: list[str]) -> list[str]:
    return [sys.executable, "-m", "vulture", *paths, "--min-confidence", str(MIN_CONFIDENCE),
            "--ignore-decorators", ",".join(IGNORED_DECORATORS)]


def dead_code(paths: list[str], cwd: Path, report_under: str) -> list[str]:
    """vulture's 'file:line: unused ...' lines for the files under `report_under` (the other paths only use)."""
    run = subprocess.run(vulture_command(paths), cwd=cwd, capture_output=True, text=True, timeout=300)
    # exit status 0: nothing found; 3: dead code found; anything else: vulture could not read its input
    assert run.returncode in (0, 3), f"vulture failed (exit {run.returncode}): {run.stderr.strip()}"
    return [line for line in run.stdout.splitlines() if line.startswith(report_under)]


def test_no_dead_code_in_src():
    paths = ["src/locktune", *USERS]
    found = dead_code(paths, REPO, "src/locktune/")
    assert not found, (
        f"{len(found)} unused name(s) in src/locktune: delete them, or, if something vulture cannot see uses "
        f"one (a library protocol, a lookup by name), list it in {ALLOWLIST} with who uses it:\n  "
        + "\n  ".join(found) + "\nreproduce: python " + shlex.join(vulture_command(paths)[1:]))


def allowlisted_names() -> list[str]:
    tree = ast.parse((REPO / ALLOWLIST).read_text())
    names = [node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id
             for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, (ast.Attribute, ast.Name))]
    assert names and all(isinstance(n, str) for n in names)
    return names


def test_the_allowlist_names_only_what_src_still_has():
    source = "\n".join(p.read_text() for p in (REPO / "src" / "locktune").rglob("*.py"))
    gone = [name for name in allowlisted_names() if not re.search(rf"\b{re.escape(name)}\b", source)]
    assert not gone, f"{ALLOWLIST} lists names that src/locktune no longer has; delete them: {gone}"


def test_the_check_reports_a_planted_dead_function(tmp_path):
    """A function nothing calls is reported with its file and line; one a test calls, or a registered one, is
    not; nor is an unused `_`-prefixed argument of a signal handler."""
    package = tmp_path / "src" / "locktune"
    package.mkdir(parents=True)
    (package / "shapes.py").write_text(
        "REGISTRY = {}\n\n\n"
        "def area(w, h):\n    return w * h\n\n\n"
        "def perimeter(w, h):\n    return 2 * (w + h)\n\n\n"
        "@REGISTRY.register('square')\ndef square(side):\n    return area(side, side)\n\n\n"
        "def on_alarm(_signum, _frame):\n    raise TimeoutError\n\n\n"
        "HANDLERS = [on_alarm]\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_shapes.py").write_text(
        "from locktune.shapes import HANDLERS, perimeter\n\n\n"
        "def test_perimeter():\n    assert perimeter(1, 2) == 6 and HANDLERS\n")
    assert dead_code(["src/locktune", "tests"], tmp_path, "src/locktune/") == []
    (tmp_path / "tests" / "test_shapes.py").write_text("from locktune.shapes import HANDLERS\n\nassert HANDLERS\n")
    assert dead_code(["src/locktune", "tests"], tmp_path, "src/locktune/") == [
        "src/locktune/shapes.py:8: unused function 'perimeter' (60% confidence)"]
