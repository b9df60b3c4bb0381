"""Skip policy: a test needing a package that `make` installs (requirements*.txt) fails when it is missing, with
the import error; only genuinely optional extras (timm, open_clip, CUDA, GPU-machine-only packages) skip."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Files whose skips are about another machine: the GPU check installs only benchmarks/wheels there.
OTHER_MACHINE = {"test_gpu.py"}


def required_modules() -> set[str]:
    names = set()
    for path in ROOT.glob("requirements*.txt"):
        for line in path.read_text().splitlines():
            match = re.match(r"\s*([A-Za-z0-9_.\-]+)", line.split("#", 1)[0])
            if match:
                names.add(match.group(1).lower().replace("-", "_"))
    return names


def test_no_test_skips_on_a_package_make_installs():
    required = required_modules()
    assert {"onnxruntime", "torch", "transformers"} <= required
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in OTHER_MACHINE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "importorskip"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                module = str(node.args[0].value).split(".")[0].lower()
                if module in required:
                    offenders.append(f"{path.name}:{node.lineno} importorskip('{module}')")
    assert not offenders, f"installed by `make`, so a missing one must fail, not skip: {offenders}"
