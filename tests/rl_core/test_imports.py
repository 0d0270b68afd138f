"""rl_core's modules import each other without a circle, counting imports inside functions too
(DESIGN.md: no import circles, and no lazy import whose only job is to hide one)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rl_core"


def imports_of(path: Path) -> set[str]:
    """rl_core modules that `path` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rl_core"):
            found.add(node.module.split(".")[1] if "." in node.module else "")
            if node.module == "rl_core":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("rl_core."))
    return found - {"", path.stem}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_rl_core_has_no_import_circle():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    assert graph["trial"], "the parser found no rl_core imports at all"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
