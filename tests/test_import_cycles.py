"""No import cycles between locktune's subpackages (cache, data, train, towers, ...) and its top-level modules
(config.py, cli.py, api.py, ...): each is one node, so `eval/driver.py` -> `report.py` -> `eval/evaluation.py`
is the cycle eval -> report -> eval.

The graph is read from the source with `ast`, every `import` counted, also those inside functions (a
lazy import only hides a cycle until the day someone moves it to the top).  The helpers several stages
need (torch.distributed, the cache folder) live in `locktune.runtime`, which imports no other subpackage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import locktune

ROOT = Path(locktune.__file__).parent


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return []


def subpackages(root: Path = ROOT) -> set[str]:
    return {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}


def module_graph(root: Path = ROOT) -> dict[str, dict[str, str]]:
    """node -> {node it imports: 'file:line' of one such import}; a node is a subpackage (all its files) or a
    top-level module (`locktune/config.py` is "config").  The package's own `__init__.py` is left out: it
    imports lazily from `api` only, and every node is inside it."""
    packages = subpackages(root)
    modules = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, dict[str, str]] = {name: {} for name in packages | modules}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        owner = parts[0] if len(parts) > 1 else path.stem
        if owner not in graph:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for module in _imported(node):
                names = module.split(".")
                if names[0] == "locktune" and len(names) > 1 and names[1] in graph and names[1] != owner:
                    graph[owner].setdefault(names[1], f"{path.relative_to(root)}:{node.lineno}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a], or None (depth-first search with an on-stack set)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, {})):
            cycle = visit(nxt, path + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def describe(graph: dict[str, dict[str, str]], cycle: list[str]) -> str:
    return "; ".join(f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:]))


def test_no_import_cycle_between_subpackages_and_top_level_modules():
    graph = module_graph()
    assert {"cache", "data", "train", "towers", "runtime", "config", "cli", "api", "errors"} <= graph.keys()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + describe(graph, cycle)
    stages = sorted(set(graph["runtime"]) & subpackages())
    assert not stages, f"runtime is imported by every stage and imports none; it imports {stages}"


def test_the_graph_has_top_level_modules(tmp_path):
    """A cycle through a top-level module (as eval -> report.py -> eval was) is found, with where it is."""
    package = tmp_path / "locktune"
    (package / "eval").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "eval" / "__init__.py").write_text("")
    (package / "eval" / "driver.py").write_text("def run():\n    from locktune.report import table\n")
    (package / "eval" / "evaluation.py").write_text("REPORTERS = {}\n")
    (package / "report.py").write_text("from locktune.eval.evaluation import REPORTERS\n")
    (package / "errors.py").write_text("")
    graph = module_graph(package)
    assert graph == {"eval": {"report": "eval/driver.py:2"}, "report": {"eval": "report.py:1"}, "errors": {}}
    assert describe(graph, find_cycle(graph)) == "eval -> report (eval/driver.py:2); report -> eval (report.py:1)"


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b": "x"}, "b": {"c": "y"}, "c": {"a": "z"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": "x"}, "b": {}, "c": {"b": "y"}}) is None
