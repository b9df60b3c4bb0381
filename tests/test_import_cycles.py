"""No import cycles between locktune's subpackages (cache, data, train, towers, ...).

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


def subpackage_graph() -> dict[str, dict[str, str]]:
    """subpackage -> {subpackage it imports: 'file:line' of one such import}."""
    subpackages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    graph: dict[str, dict[str, str]] = {name: {} for name in subpackages}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if len(parts) < 2 or parts[0] not in subpackages:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for module in _imported(node):
                names = module.split(".")
                if names[0] == "locktune" and len(names) > 1 and names[1] in subpackages and names[1] != parts[0]:
                    graph[parts[0]].setdefault(names[1], f"{path.relative_to(ROOT)}:{node.lineno}")
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


def test_no_import_cycle_between_subpackages():
    graph = subpackage_graph()
    assert {"cache", "data", "train", "towers", "runtime"} <= graph.keys()
    cycle = find_cycle(graph)
    where = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])] if cycle else []
    assert cycle is None, "import cycle: " + "; ".join(where)
    assert graph["runtime"] == {}, "runtime is imported by every stage and imports none"


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b": "x"}, "b": {"c": "y"}, "c": {"a": "z"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": "x"}, "b": {}, "c": {"b": "y"}}) is None
